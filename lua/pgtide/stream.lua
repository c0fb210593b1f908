--[[
pgtide.stream: the CDC half of the local runbook seen from Lua: the
running replication and the foreground streaming loop.

  local stream = require "pgtide.stream"
  stream.ensure(ctx)                 --> the running replication (core.replicate), started once
  stream.stop(ctx)                   --> final status (nil when none ran)
  stream.table_sync(ctx)             --> the tables copied after the slot's snapshot, with positions
  stream.catch_up(ctx, r, timeout, what)     -- wait until the source's current LSN is applied
  stream.run_until_cutover(ctx [, opts])     --> the request that ended streaming

What it shares with other processes lives in their own modules:
pgtide.names (slot and publication names), pgtide.status_file
(status.json), pgtide.cutover_request (cutover-request.json),
pgtide.fence (the write fence) and pgtide.status (what `pgtide status`
reads).
]]
local core = require "core"
local cutover_request = require "pgtide.cutover_request"
local errors = require "pgtide.errors"
local names = require "pgtide.names"
local runbook = require "pgtide.runbook"
local status_file = require "pgtide.status_file"
local util = require "pgtide.util"
local log = require "log"
local sys = require "sys"

local M = {}

M.LINE_INTERVAL = 10

local MB = 1024 * 1024

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
  local n = names.of(ctx.name)
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
    if now - d.last_pub >= status_file.PUBLISH_INTERVAL then
      d.last_pub = now
      status_file.publish(ctx, { phase = phase, cdc = cdc_fields(st, ctx) })
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
  status_file.publish(ctx, { phase = "streaming", cutover = { mode = p.cutover, requested = false } })
  local request
  local function iteration()
    local st = r:run_for(1)
    if tick then
      tick(ctx)          -- may stop and restart the stream (pgtide.new_tables)
      r = M.ensure(ctx)
    end
    local extra
    local req = cutover_request.read(ctx.state_dir)
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
  cutover_request.clear(ctx.state_dir)
  status_file.publish(ctx, { phase = "cutover", cutover = { mode = p.cutover, requested = true,
                                                  requested_at = request.requested_at, by = request.by } })
  return request
end

-- }==================================================================

return M
