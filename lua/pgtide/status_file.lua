--[[
pgtide.status_file: the files a running migration keeps in its state
directory for other processes (`pgtide status`, `pgtide cutover`,
`pgtide report`), all written atomically and redacted.

  status_file.publish(ctx, fields)   -- merge into status.json (pid, time added)
  status_file.read_json(path)        --> table or nil (missing or unreadable)
  status_file.alive(pid)             --> is that process running?

Files:
  status.json          the running process: pid, phase, full-load and CDC
                       progress; rewritten every PUBLISH_INTERVAL s while a
                       step waits
  cdc-status.json      written by the CDC worker itself once a second
]]
local util = require "pgtide.util"
local json = require "json"
local log = require "log"
local sys = require "sys"

local M = {}

M.STATUS = "status.json"
M.CDC_STATUS = "cdc-status.json"
M.PUBLISH_INTERVAL = 2

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

return M
