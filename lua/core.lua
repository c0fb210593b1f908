--[[
core: the engine's three data paths behind one small Lua module.

  local core = require "core"

  -- 1. full load (core.load): one snapshot, N workers, resumable units
  local summary = core.full_load { source = ..., target = ..., jobs = 4,
                                   snapshot = slot }  -- or slot.snapshot, or nil

  -- 2. change data capture (core.cdc)
  local slot <close> = core.create_slot { source = ..., slot = "pgtide_m1", publication = "pgtide_m1" }
  local cdc <close> = core.replicate { source = ..., target = ..., slot = "pgtide_m1",
                                       publication = "pgtide_m1", state_dir = dir }
  cdc:lag()  cdc:status()  cdc:run_for(1)  cdc:wait_until(lsn, timeout)
  cdc:pause_at(lsn)  cdc:wait_applied(lsn, timeout)  cdc:resume()  cdc:stop()
  cdc:pause(timeout)    -- pause at the source's current position (waits for it)

  -- 3. validation (core.validate), consistent while 'cdc' keeps applying
  local report = core.validate { source = ..., target = ..., cdc = cdc, tables = {...} }

The native modules do the work; this file only adapts them to each
other: a slot object is accepted where a snapshot is expected, and the
replication object has the pause_at / wait_applied / resume trio that
the validation's consistent-point mode needs (see docs/validation.md).
]]
local load = require "core.load"
local cdc = require "core.cdc"
local vcore = require "core.validate"

local M = {}

-- {==================================================================
-- Full load
-- ===================================================================

-- core.full_load(opts): load.full_load with opts.snapshot allowed to be
-- a core.cdc slot object (its exported snapshot is used).
function M.full_load(opts)
  local o = {}
  for k, v in pairs(opts) do o[k] = v end
  if type(o.snapshot) == "userdata" or type(o.snapshot) == "table" then
    o.snapshot = o.snapshot.snapshot
  end
  return load.full_load(o)
end

M.plan = load.plan
M.run_parallel = load.run_parallel
M.ncpus = load.ncpus

-- }==================================================================

-- {==================================================================
-- Replication
-- ===================================================================

local Replication = {}
Replication.__index = Replication
Replication.__name = "core.replication"

-- Methods passed straight to the native worker.
for _, name in ipairs { "status", "lag", "poll", "run_for", "wait_until", "pause_at", "resume" } do
  Replication[name] = function(self, ...)
    return self.worker[name](self.worker, ...)
  end
end

--[[
r:wait_applied(lsn, timeout) -> true | false, why.  The name the
validation hook looks for; unlike wait_until it reports a timeout as
false plus a reason instead of only false.
]]
function Replication:wait_applied(lsn, timeout)
  local ok = self.worker:wait_until(lsn, timeout)
  if ok then return true end
  local st = self.worker:status()
  return false, string.format("applied %s, state %s", st.applied_lsn, st.state)
end

--[[
r:pause(timeout) -> lsn.  Pause at the source's current WAL position:
returns once everything committed before it is applied; later changes
are held until r:resume().  Raises when it is not reached in time.
]]
function Replication:pause(timeout)
  local pg = require "pg"
  local c <close> = pg.connect(self.source)
  local lsn = c:query_one("SELECT pg_current_wal_lsn()::text AS l").l
  self.worker:pause_at(lsn)
  local ok, why = self:wait_applied(lsn, timeout or 300)
  if not ok then
    self.worker:resume()
    error(string.format("change apply did not reach %s within %s s (%s)", lsn, tostring(timeout or 300),
      why), 2)
  end
  return lsn
end

-- r:stop([timeout]) -> final status (idempotent).
function Replication:stop(timeout)
  if not self.final then self.final = self.worker:stop(timeout) end
  return self.final
end
Replication.close = Replication.stop

-- r:alive() -> false once stopped or failed.
function Replication:alive()
  if self.final then return false end
  local st = self.worker:status()
  return st.state ~= "stopped" and st.state ~= "failed"
end

Replication.__close = function(self) self:stop() end
Replication.__tostring = function(self) return "core.replication (" .. tostring(self.worker) .. ")" end

-- core.replicate(opts) -> replication object (see cdc.start in docs/cdc.md).
function M.replicate(opts)
  local w = cdc.start(opts)
  return setmetatable({ worker = w, source = opts.source, slot = opts.slot }, Replication)
end

M.create_slot = cdc.create_slot
M.slot_info = cdc.slot_info
M.drop_slot = cdc.drop
M.lsn_diff = cdc.lsn_diff
M.lsn = cdc.lsn
M.lsn_int = cdc.lsn_int

-- }==================================================================

-- {==================================================================
-- Validation
-- ===================================================================

--[[
core.validate(opts) -> the data report of core.validate.run.  With
opts.cdc (a replication object), the mode defaults to "consistent" and
the pause/resume hooks come from it.
]]
function M.validate(opts)
  local o = {}
  for k, v in pairs(opts) do o[k] = v end
  if o.cdc then
    o.mode = o.mode or "consistent"
    local r = o.cdc
    o.cdc = nil
    if o.mode == "consistent" then
      o.pause_at, o.resume = require("pgtide.validate").cdc_hook(r, o.pause_timeout)
    end
  end
  o.pause_timeout = nil
  return vcore.run(o)
end

-- }==================================================================

return M
