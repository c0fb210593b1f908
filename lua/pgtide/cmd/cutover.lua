-- pgtide cutover [--state DIR | -c CONFIG | name=NAME | NAME] [--no-wait] [--timeout S] [--cancel]
-- Ask the running `pgtide run local` to cut over (a request file in the
-- state directory that its stream step polls), then follow the cutover.
local errors = require "pgtide.errors"
local cmd_status = require "pgtide.cmd.status"
local cutover_request = require "pgtide.cutover_request"
local status = require "pgtide.status"
local status_file = require "pgtide.status_file"
local util = require "pgtide.util"
local log = require "log"
local sys = require "sys"

local M = {
  summary = "ask a streaming migration (run local) to cut over, and follow the cutover",
  usage = [[
pgtide cutover [--state DIR | -c CONFIG | name=NAME | NAME] [--no-wait]
               [--timeout SECONDS] [--cancel]

Requests the cutover of the migration whose state is in DIR (default as for
`pgtide status`).  The running `pgtide run local` takes the request at its
next poll (within a second) once it is streaming: it catches up, fences
writes if write_fence=true, waits until the target has applied the
source's current position, syncs sequences, adds the foreign keys,
validates, prints the switch-over instructions and stops the stream.  A
request made earlier (during the full load, say) waits for the stream.

By default this command then follows the cutover and exits when it is
done (0) or failed (1).  --no-wait returns once the request is written;
--timeout bounds the wait (default 3600 s; the cutover itself goes on);
--cancel withdraws a request the run has not taken yet.

Exit codes: 0 cut over (or request written with --no-wait / no run active),
1 the cutover failed, the run stopped or the wait timed out, 2 usage error.]],
}

local function step_status(dir, name)
  local st = status_file.read_json(dir .. "/state.json") or {}
  local s = (st.steps or {})[name] or {}
  return s.status or "pending", s
end

function M.run(args)
  local o, rest = cmd_status.own_flags(args, { ["--no-wait"] = "flag", ["--cancel"] = "flag",
                                           ["--timeout"] = "value" })
  local dir = cmd_status.resolve(rest)
  local timeout = tonumber(o.timeout or 3600)
  if not timeout or timeout < 0 then errors.usage("--timeout needs a number of seconds") end
  local st = status_file.read_json(dir .. "/state.json") or {}
  if (st.params or {}).cdc == false then
    errors.usage("migration %s runs without CDC (cdc=false): there is nothing to cut over", tostring(st.name))
  end
  if not (st.order and table.concat(st.order, ","):find("cutover", 1, true)) then
    errors.usage("migration %s (runbook %s) has no cutover step", tostring(st.name), tostring(st.runbook))
  end
  if o.cancel then
    if cutover_request.read(dir) then
      cutover_request.clear(dir)
      print("cutover request withdrawn")
    else
      print("no pending cutover request (a request the run already took cannot be withdrawn)")
    end
    return 0
  end
  local cs = step_status(dir, "cutover")
  if cs == "done" then
    local _, rec = step_status(dir, "cutover")
    print(string.format("migration %s is already cut over (at %s)", tostring(st.name),
      tostring((rec.outputs or {}).cutover_lsn)))
    return 0
  end
  local s = status.collect(dir, { no_source = true })
  local taken = step_status(dir, "stream") == "done"
  if taken then
    local _, rec = step_status(dir, "stream")
    local req = (rec.outputs or {}).cutover_request or {}
    print(string.format("the cutover of migration %s is already under way (requested by %s at %s)",
      tostring(st.name), tostring(req.by), tostring(req.requested_at)))
  else
    local who = string.format("pgtide cutover (pid %d on %s)", sys.getpid(), sys.hostname())
    local req = cutover_request.write(dir, who)
    print(string.format("cutover requested for migration %s (request %s)", tostring(st.name), req.id))
  end
  if not s.running then
    print(string.format("no pgtide run is driving this migration now: the cutover %s when it is "
      .. "resumed (pgtide run local ... with the same --state)", taken and "goes on" or "happens"))
    return 0
  end
  if o.no_wait then return 0 end
  print(string.format("following the cutover (pid %d, phase %s); Ctrl-C stops following, not the cutover",
    s.pid, s.phase))
  local t0 = sys.monotonic()
  local last_phase, last_line = nil, 0
  while true do
    local status_now, rec = step_status(dir, "cutover")
    if status_now == "done" then
      local out = rec.outputs or {}
      print(string.format("cutover done: the target has every change up to %s%s", tostring(out.cutover_lsn),
        out.validation and (", validation " .. tostring(out.validation.result)) or ""))
      return 0
    end
    if status_now == "failed" then
      io.stderr:write(sys.redact(string.format("pgtide: the cutover failed: %s\n", tostring(rec.error))))
      return 1
    end
    s = status.collect(dir, { no_source = true })
    if not s.running then
      -- the run may have ended right after the step finished
      if step_status(dir, "cutover") == "done" then goto continue end
      io.stderr:write("pgtide: the run stopped before the cutover finished: see its log ("
        .. dir .. "/pgtide.log) and resume it with the same command\n")
      return 1
    end
    if s.phase ~= last_phase or sys.monotonic() - last_line >= 10 then
      local c = s.cdc or {}
      print(string.format("  %s%s", s.phase, c.lag_bytes and string.format(" (lag %s, %.1f s)",
        util.format_bytes(c.lag_bytes), c.lag_seconds or 0) or ""))
      last_phase, last_line = s.phase, sys.monotonic()
    end
    if sys.monotonic() - t0 >= timeout then
      io.stderr:write(string.format("pgtide: gave up following after %s; the cutover goes on in the run "
        .. "(pgtide status --state %s)\n", util.format_duration(timeout), dir))
      return 1
    end
    if sys.sleep(0.5) == false then
      log.status(nil)
      error(errors.new { message = "interrupted", interrupted = true }, 0)
    end
    ::continue::
  end
end

return M
