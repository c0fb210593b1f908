-- pgtide.state: the migration's state directory.
--
-- <dir>/state.json holds each step's status ("running", "done",
-- "failed", "interrupted"), outputs (ARNs, LSNs, counts) and timings.
-- It is rewritten atomically (temp file, fsync, rename) after every
-- change, so a crash, kill -9 or Ctrl-C never leaves a torn file, and a
-- rerun resumes at the first step that is not "done".  The text is
-- passed through the secret redactor before it is written.
-- <dir>/pgtide.log receives every log line; a lock on <dir> itself prevents
-- two runs (<dir>/lock names the holder's pid).
local json = require "json"
local sys = require "sys"
local errors = require "pgtide.errors"
local util = require "pgtide.util"

local State = {}
State.__index = State

local M = {}

-- Default state directory for a migration name.
function M.default_dir(name)
  return ".pgtide/" .. name
end

--[[
Open (creating if needed) the state directory 'dir'.  opts.lock = true
takes the directory lock; opts.create = false only reads an existing
state.  Raises a usage error when the directory cannot be used.
]]
function M.open(dir, opts)
  opts = opts or {}
  if opts.create ~= false then
    local ok, err = sys.mkdir_p(dir)
    if not ok then errors.usage("cannot create state directory: %s", err) end
  end
  local self = setmetatable({ dir = dir, path = dir .. "/state.json" }, State)
  if opts.lock then
    -- the directory itself is locked (flock); the file 'lock' only says who holds it
    local ok, err = sys.lock(dir)
    if not ok then
      local holder = tonumber(sys.readfile(dir .. "/lock") or "")
      errors.usage("state directory %s is in use (%s%s): another pgtide run is still going; wait for "
        .. "it, or stop it", dir, err, holder and (", pid " .. math.tointeger(holder)) or "")
    end
    sys.write_atomic(dir .. "/lock", tostring(sys.getpid()) .. "\n")
  end
  local text = sys.readfile(self.path)
  if text then
    local ok, data = pcall(json.decode, text)
    if not ok or type(data) ~= "table" then
      errors.usage("state file %s is unreadable (%s); move it away to start over", self.path,
        tostring(data))
    end
    self.data = data
  else
    self.data = { version = 1, steps = {}, created = util.now_iso() }
  end
  self.data.steps = self.data.steps or {}
  return self
end

function State:exists()
  return sys.exists(self.path)
end

function State:save()
  self.data.updated = util.now_iso()
  local text = sys.redact(json.encode(self.data, { pretty = true }))
  local ok, err = sys.write_atomic(self.path, text .. "\n")
  if not ok then error(errors.new { message = "cannot save state: " .. err }, 0) end
end

-- The record for a step (created on first use).
function State:step(name)
  local s = self.data.steps[name]
  if not s then
    s = { status = "pending", outputs = {} }
    self.data.steps[name] = s
  end
  s.outputs = s.outputs or {}
  return s
end

function State:status(name)
  local s = self.data.steps[name]
  return s and s.status or "pending"
end

return M
