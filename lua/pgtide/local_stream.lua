--[[
pgtide.local_stream: the stream step of a `local` migration: changes
applied in the foreground until cutover is requested (pgtide.stream),
looking every NEW_TABLES_EVERY seconds for tables created on the source
(pgtide.new_tables): each is named in the log and `pgtide status`, and
with new_tables=add created on the target, copied and streamed.

  local_stream.run(ctx)                -- the stream step; returns when cutover is requested
  local_stream.watch_new_tables(ctx)   -- one look; returns the number of tables added
  local_stream.NEW_TABLES_EVERY        -- seconds between looks

Raises the stream's errors and step failures; a failed look for new
tables is logged and tried again, not raised.
]]
local runbook = require "pgtide.runbook"
local stream = require "pgtide.stream"
local names_of = require("pgtide.names").of
local status_file = require "pgtide.status_file"
local new_tables = require "pgtide.new_tables"
local scope = require "pgtide.local_scope"
local log = require "log"
local sys = require "sys"

local M = {}

M.NEW_TABLES_EVERY = 10   -- seconds between looks for tables created on the source

--[[ Tables created on the source while streaming (pgtide.new_tables):
  each is named at once in the log and `pgtide status`; with
  new_tables=add it is created on the target, copied and streamed from
  then on (the stream stops for the copy).  A table pgtide may not
  publish waits for its owner's ALTER PUBLICATION, which the warning
  spells out. ]]
function M.watch_new_tables(ctx)
  local skip = {}
  if ctx.params.unlogged == "skip" then skip = scope.unlogged_set(ctx) end
  local found = new_tables.find(ctx.src, scope.known_tables(ctx), scope.scope_fn(ctx))
  local names, waiting = {}, {}
  for _, t in ipairs(found) do
    if not skip[t.schema .. "." .. t.table] then names[#names + 1] = t end
  end
  if #names == 0 then
    if ctx.out.new_tables then ctx.out.new_tables = nil; status_file.publish(ctx, { new_tables = {} }) end
    return 0
  end
  local added = 0
  local slot = (ctx.outputs["full-load"] or {}).slot or {}
  for _, t in ipairs(names) do
    if ctx.params.new_tables ~= "add" or t.unlogged then
      waiting[#waiting + 1] = { name = t.qname, why = t.unlogged
        and "unlogged: its changes cannot stream; create and fill it on the target at cutover"
        or "new_tables=warn: create it on the target and copy it yourself, or rerun with new_tables=add" }
    else
      local ok, rec, why = pcall(new_tables.add, ctx, t, {
        publication = slot.publication or names_of(ctx.name).publication,
        may_alter = slot.publication_created ~= false and not ctx.params.publication,
        triggers = ((ctx.outputs["post-data"] or {}).triggers == "disabled") and "disabled" or "replica_role",
        stop = function() stream.stop(ctx) end, dir = ctx.state_dir .. "/new-tables",
        slot = names_of(ctx.name).slot, no_owner = ctx.params.no_owner,
        no_privileges = ctx.params.no_privileges, pg_dump = ctx.params.pg_dump })
      if ok and rec then
        ctx.out.added = ctx.out.added or {}
        ctx.out.added[#ctx.out.added + 1] = rec
        ctx:save()
        added = added + 1
      else
        waiting[#waiting + 1] = { name = t.qname, why = ok and why or ("adding it failed: "
          .. require("pgtide.errors").message(rec)) }
      end
    end
  end
  local key = {}
  for _, w in ipairs(waiting) do key[#key + 1] = w.name .. ": " .. w.why end
  local text = table.concat(key, "; ")
  if #waiting > 0 and text ~= ctx.out.new_tables_text then
    log.warn("new table(s) on the source that the stream does not carry: %s", text)
  end
  ctx.out.new_tables = #waiting > 0 and waiting or nil
  ctx.out.new_tables_text = #waiting > 0 and text or nil
  status_file.publish(ctx, { new_tables = waiting })
  return added
end

--[[ The stream step: runs the stream until cutover is requested, looking
  for new tables between batches and when the stream meets a change for
  a table the target lacks (a new partition). ]]
function M.run(ctx)
  local last = -1e9
  -- looking for new tables must not end the stream: a lost connection (a restarted
  -- server, a terminated session) is reopened and the look is tried again later
  local function watch()
    local ok, n = pcall(M.watch_new_tables, ctx)
    if ok then return n end
    if require("pgtide.errors").is_interrupt(n) then error(n, 0) end
    runbook.revive(ctx)
    log.warn("looking for new tables on the source failed (tried again in %d s): %s", M.NEW_TABLES_EVERY,
      require("pgtide.errors").message(n))
    return 0
  end
  stream.run_until_cutover(ctx, {
    tick = function()
      if sys.monotonic() - last >= M.NEW_TABLES_EVERY then
        last = sys.monotonic()
        watch()
      end
    end,
    -- a publication that lists partitioned roots carries a new partition's first change
    -- before the target has the partition: add it, and the stream goes on past that change
    recover = function() return watch() > 0 end,
  })
end

return M
