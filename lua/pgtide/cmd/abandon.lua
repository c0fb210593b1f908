-- pgtide abandon [--state DIR | -c CONFIG | name=NAME | NAME] [--yes]
-- Give a migration up cleanly: drop what it made on both servers, as its
-- state records it, and mark the state abandoned.
local config = require "pgtide.config"
local errors = require "pgtide.errors"
local runbook = require "pgtide.runbook"
local runbooks = require "pgtide.runbooks"
local state = require "pgtide.state"
local status = require "pgtide.cmd.status"
local util = require "pgtide.util"
local log = require "log"
local sys = require "sys"

local M = {
  summary = "give a migration up: drop the slot, publication and progress record it made",
  usage = [[
pgtide abandon [--state DIR | -c CONFIG | name=NAME | NAME] [--yes]

Drops what the migration (chosen as for `pgtide status`) created and that
would otherwise stay behind: the replication slot on the source (it keeps
WAL there), the publication (unless it was yours, publication=), and the
progress record on the target (with the table and schema pgtide made for
it).  Only what its state says it created is dropped.  The list is shown
first and confirmed on a terminal, or with --yes.  The state is then
marked abandoned: `pgtide run` refuses to resume it.  Left alone, and
listed: the migrated tables on the target, a write fence, disabled
triggers.  The state keeps connection strings without their password:
give -c CONFIG when it needs one (or use ~/.pgpass / PGPASSWORD).

Exit codes: 0 abandoned (or already), 1 a drop failed (rerun to go on),
2 usage error, no confirmation, or a run is driving the migration.]],
}

local function describe(it)
  return string.format("%-12s %-32s on the %s%s", it.kind, it.name, it.where, it.note and (": " .. it.note) or "")
end

function M.run(args)
  local o, rest = status.own_flags(args, { ["--yes"] = "flag", ["-y"] = "flag" })
  local yes = o.yes or o.y
  local dir, cfg = status.resolve(rest)
  -- the state lock: no run may drive the migration meanwhile
  local st = state.open(dir, { lock = true, create = false })
  local data = st.data
  if data.abandoned then
    print(string.format("migration %s was already abandoned at %s", tostring(data.name), tostring(data.abandoned.at)))
    return 0
  end
  local ok, rb = pcall(runbooks.load, data.runbook or "?")
  if not ok then
    errors.usage("cannot load runbook '%s' of migration %s: %s", tostring(data.runbook), tostring(data.name),
      errors.message(rb))
  end
  if not rb.abandon then
    errors.usage("runbook %s does not say how to abandon a migration: run its cleanup step instead "
      .. "(pgtide run %s --only cleanup --state %s)", rb.name, rb.name, dir)
  end
  local params = util.copy(data.params or {})
  for _, k in ipairs { "source", "target" } do
    if cfg[k] then params[k] = cfg[k] end
    if type(params[k]) == "string" and params[k]:find("***", 1, true) then
      errors.usage("the state keeps the %s connection string with its password masked: pass -c CONFIG "
        .. "(or use ~/.pgpass or PGPASSWORD)", k)
    end
  end
  local ok_log = log.open(dir .. "/pgtide.log")
  if not ok_log then log.debug("no log file in %s", dir) end
  local ctx = runbook.context(rb, { params = params, name = data.name, yes = yes, config = cfg }, st)
  local code = 0
  local ok2, err = pcall(function()
    local items = rb.abandon.find(ctx)
    local drops, notes = {}, {}
    for _, it in ipairs(items) do
      if it.kind == "note" then notes[#notes + 1] = it else drops[#drops + 1] = it end
    end
    print(string.format("migration %s (runbook %s), state in %s", tostring(data.name), rb.name, dir))
    if #drops == 0 then
      print("nothing of it is left to drop on the servers")
    else
      print("to drop:")
      for _, it in ipairs(drops) do print("  " .. sys.redact(describe(it))) end
    end
    if #notes > 0 then
      print("left as they are:")
      for _, it in ipairs(notes) do print("  " .. sys.redact(describe(it))) end
    end
    if not ctx:confirm(#drops > 0 and "Drop these and mark the migration abandoned?"
                       or "Mark the migration abandoned?") then
      io.stderr:write("pgtide: nothing dropped: confirm on a terminal, or rerun with --yes\n")
      code = 2
      return
    end
    local dropped = rb.abandon.drop(ctx, drops)
    data.abandoned = { at = util.now_iso(), dropped = dropped, by = "pgtide abandon (pid " .. sys.getpid() .. ")" }
    st:save()
    print(string.format("abandoned: %s", #dropped > 0 and table.concat(dropped, ", ") or "nothing to drop"))
  end)
  ctx:close()
  if not ok2 then
    if errors.is_usage(err) or errors.is_interrupt(err) then error(err, 0) end
    io.stderr:write(sys.redact(string.format("pgtide: abandon failed: %s\nFix the cause and rerun: what was "
      .. "dropped stays dropped\n", errors.message(err))))
    return 1
  end
  if code == 0 then pcall(function() require("pgtide.report").write(dir) end) end
  return code
end

return M
