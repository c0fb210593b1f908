--[[
pgtide.cutover_request: `pgtide cutover` asks the running migration to
cut over through a file in its state directory, cutover-request.json,
which the stream step polls and takes.

  cutover_request.write(dir, by)  --> request { id, requested_at, by, pid }
  cutover_request.read(dir)       --> the pending request or nil
  cutover_request.clear(dir)
]]
local errors = require "pgtide.errors"
local status_file = require "pgtide.status_file"
local util = require "pgtide.util"
local json = require "json"
local sys = require "sys"

local M = {}

M.FILE = "cutover-request.json"

--[[
write(dir, by) -> request.  Writes cutover-request.json
atomically; the stream step of the running migration polls for it.
]]
function M.write(dir, by)
  local req = { id = util.random_hex(), requested_at = util.now_iso(), requested_unix = sys.time(),
                by = by or "pgtide cutover", pid = sys.getpid() }
  local ok, err = sys.write_atomic(dir .. "/" .. M.FILE, json.encode(req) .. "\n")
  if not ok then errors.usage("cannot write the cutover request: %s", tostring(err)) end
  return req
end

function M.read(dir)
  return status_file.read_json(dir .. "/" .. M.FILE)
end

function M.clear(dir)
  os.remove(dir .. "/" .. M.FILE)
end

return M
