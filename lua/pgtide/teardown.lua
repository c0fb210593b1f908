--[[
pgtide.teardown: dropping what a local migration made, and only that, as
its state records it.  Shared by the local runbook's cleanup step (after
a cutover) and `pgtide abandon` (giving up).

  teardown.drop_slot(src, name [, timeout])  -- waits out a walsender still holding it
  teardown.drop_publication(src, name)
  teardown.drop_progress(ctx, slot)          -- the progress record, its table and schema
  teardown.find(ctx)    --> what exists of it now, as items { kind, name, where, note }
  teardown.drop(ctx, items) --> names dropped
  teardown.cleanup(ctx) -- the local runbook's cleanup step

The state's record (runbooks/local.lua, full-load step, outputs.slot):
name, publication, publication_created (false: the owner's publication,
given with publication=), record (the progress record's name), progress
("origin" or "table"), identity, progress_schema_existed and
progress_table_existed (whether the schema pgtide and its table were there
before this migration).  Every drop raises on failure (pg errors).
]]
local runbook = require "pgtide.runbook"
local cdc = require "core.cdc"
local log = require "log"
local sys = require "sys"

local M = {}

-- The names a migration uses (pgtide.names).
local function names(name) return require("pgtide.names").of(name) end

--[[ drop_slot(src, name [, timeout]): drop the replication slot if it
  exists.  A walsender of a run that is ending may hold it a moment
  (55006): retried up to 'timeout' seconds (30). ]]
function M.drop_slot(src, name, timeout)
  local t0 = sys.monotonic()
  while true do
    local ok, err = pcall(src.exec, src, [[SELECT pg_drop_replication_slot(slot_name)
                                            FROM pg_replication_slots WHERE slot_name = $1]], name)
    if ok then return end
    if type(err) ~= "table" or err.sqlstate ~= "55006" or sys.monotonic() - t0 > (timeout or 30) then
      error(err, 0)
    end
    sys.sleep(0.2)
  end
end

function M.drop_publication(src, name)
  src:exec("DROP PUBLICATION IF EXISTS " .. src:quote_ident(name))
end

--[[ drop_progress(ctx, slot): drop the progress record this migration
  kept on the target, and the table and schema pgtide made for it when
  nothing else is left in them.  Needs only what creating them needed. ]]
function M.drop_progress(ctx, slot)
  if not slot.record then   -- a state from before records were bound to the migration
    cdc.drop { target = ctx.params.target, origin = names(ctx.name).slot }
    return
  end
  cdc.drop { target = ctx.params.target, origin = slot.record, progress = slot.progress,
             identity = slot.identity }
  if slot.progress ~= "table" then return end
  local t = ctx.dst:query_one([[SELECT to_regclass('pgtide.cdc_progress') IS NOT NULL AS tbl,
                                       to_regnamespace('pgtide') IS NOT NULL AS schema]])
  if t.tbl and not slot.progress_table_existed
     and not ctx.dst:query_one("SELECT 1 AS x FROM pgtide.cdc_progress LIMIT 1") then
    ctx.dst:exec("DROP TABLE pgtide.cdc_progress")
  end
  if t.schema and not slot.progress_schema_existed and not ctx.dst:query_one([[
      SELECT 1 AS x FROM pg_depend d JOIN pg_namespace n ON d.refobjid = n.oid
       WHERE d.refclassid = 'pg_namespace'::regclass AND n.nspname = 'pgtide' LIMIT 1]]) then
    ctx.dst:exec("DROP SCHEMA pgtide")
  end
end

-- The slot record of the state, and whether this migration made the slot.
local function recorded(ctx)
  local fl = ctx.outputs["full-load"] or {}
  local n = names(ctx.name)
  local slot = fl.slot or {}
  local ours = fl.slot_pending == n.slot or slot.name == n.slot
  return slot, ours, n
end

--[[
find(ctx) -> items.  What of this migration exists now: the replication
slot and the publication on the source (only those its state says it
created), the progress record on the target (and the table and schema
pgtide made for it), and notes for what abandoning leaves alone (the
write fence, disabled triggers, the migrated tables).  Asks both
servers; raises when one cannot be reached.
]]
function M.find(ctx)
  local items = {}
  local slot, ours, n = recorded(ctx)
  if ctx.params.cdc ~= false and ours then
    local info = cdc.slot_info { source = ctx.params.source, slot = n.slot }
    if info.exists then
      items[#items + 1] = { kind = "slot", name = n.slot, where = "source",
        note = info.retained_bytes and string.format("retains %s of WAL",
          require("pgtide.util").format_bytes(info.retained_bytes)) or nil }
    end
    local pub = slot.publication or n.publication
    if slot.publication_created ~= false and not ctx.params.publication
       and ctx.src:query_one("SELECT 1 AS x FROM pg_publication WHERE pubname = $1", pub) then
      items[#items + 1] = { kind = "publication", name = pub, where = "source" }
    end
    local record = slot.record or n.slot
    local has
    if slot.progress == "table" then
      has = ctx.dst:query_one([[SELECT to_regclass('pgtide.cdc_progress') IS NOT NULL AS t]]).t
        and ctx.dst:query_one("SELECT 1 AS x FROM pgtide.cdc_progress WHERE name = $1", record) ~= nil
    else
      has = ctx.dst:query_one("SELECT 1 AS x FROM pg_replication_origin WHERE roname = $1", record) ~= nil
    end
    if has or slot.progress == "table" then
      items[#items + 1] = { kind = "progress", name = record, where = "target",
        note = slot.progress == "table" and (has and "row in pgtide.cdc_progress" or "none left")
          .. ((not slot.progress_table_existed or not slot.progress_schema_existed)
            and ", with the table and schema pgtide when nothing else is in them" or "")
          or "replication origin", record = slot, exists = has }
    end
  end
  local cut = ctx.outputs.cutover or {}
  if cut.fence and not ctx.outputs.cleanup then
    items[#items + 1] = { kind = "note", where = "source", name = "write fence",
      note = string.format("database %s stays read-only for new sessions: lift it with ALTER DATABASE %s RESET "
        .. "default_transaction_read_only", cut.fence.database, ctx.src:quote_ident(cut.fence.database)) }
  end
  local disabled = 0
  for _, step in ipairs { "schema", "post-data" } do
    disabled = disabled + #((ctx.outputs[step] or {}).triggers_disabled or {})
  end
  if disabled > 0 and not cut.triggers_enabled then
    items[#items + 1] = { kind = "note", where = "target", name = "disabled triggers",
      note = string.format("%d user trigger(s) on the migrated tables stay disabled", disabled) }
  end
  if ctx.outputs.schema and ctx.outputs.schema.applied then
    items[#items + 1] = { kind = "note", where = "target", name = "migrated tables",
      note = "the schema and rows copied to the target are left as they are (drop them, or the database, to start over)" }
  end
  return items
end

--[[ drop(ctx, items) -> list of "kind name" dropped.  The slot first (it
  holds WAL on the source), then the publication, then the progress
  record.  Notes are left alone. ]]
function M.drop(ctx, items)
  local done = {}
  for _, kind in ipairs { "slot", "publication", "progress" } do
    for _, it in ipairs(items) do
      if it.kind == kind then
        if kind == "slot" then
          ctx.src:exec("SET default_transaction_read_only = off")   -- a write fence's session
          M.drop_slot(ctx.src, it.name)
        elseif kind == "publication" then
          ctx.src:exec("SET default_transaction_read_only = off")
          M.drop_publication(ctx.src, it.name)
        else
          M.drop_progress(ctx, it.record or {})
        end
        log.info("abandon: dropped %s %s on the %s", kind, it.name, it.where)
        done[#done + 1] = kind .. " " .. it.name
      end
    end
  end
  return done
end

--[[ cleanup(ctx): the local runbook's cleanup step, after a cutover: stop
  the stream, drop the replication slot, the publication when this
  migration made it (the owner's, given with publication=, is named in
  the log and ctx.out.left for its owner to drop), and the progress
  record; records what it dropped in ctx.out.dropped.  The drops run in
  ctx.src's session, which the write fence's read-only default is lifted
  in (a new session, as core.cdc's drop opens, could not drop the
  publication).  Raises pg errors. ]]
function M.cleanup(ctx)
  local n = names(ctx.name)
  local slot = (ctx.outputs["full-load"] or {}).slot or {}
  require("pgtide.stream").stop(ctx)
  -- the write fence makes new sessions read-only: this one needs to write
  ctx.src:exec("SET default_transaction_read_only = off")
  M.drop_slot(ctx.src, n.slot)
  runbook.crash_point("cleanup:slot")
  -- the publication only when this migration made it (publication= names the owner's)
  local pub = slot.publication or n.publication
  if slot.publication_created ~= false and not ctx.params.publication then
    M.drop_publication(ctx.src, pub)
  else
    local given = ctx.params.publication or pub
    local owner = ctx.src:query_one([[SELECT pg_get_userbyid(pubowner) AS o FROM pg_publication
                                       WHERE pubname = $1]], given)
    if owner then
      ctx.out.left = { publication = given, owner = owner.o }
      log.warn("cleanup: publication %s belongs to %s, who made it for this migration; when nothing "
        .. "else uses it, as %s run on the source: DROP PUBLICATION %s;", given, owner.o, owner.o,
        require("pgtide.quote").ident(ctx.src, given))
    end
    pub = nil
  end
  runbook.crash_point("cleanup:publication")
  M.drop_progress(ctx, slot)
  runbook.crash_point("cleanup:progress")
  ctx.out.dropped = { slot = n.slot, publication = pub, progress = slot.record }
  log.info("cleanup: dropped replication slot %s%s and the progress record %s on the target",
    n.slot, pub and (", publication " .. pub) or "", tostring(slot.record or n.slot))
end

return M
