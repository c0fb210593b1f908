--[[
pgtide.local_resume: how a `local` migration's full load survives a crash
(the scheme is in docs/runbooks.md, "A crash, at any point").  With CDC
the load copies under the exported snapshot of the migration's
replication slot; a snapshot dies with its session, the slot does not.
After a crash the tables copied whole under one snapshot are kept, the
others are copied again under a temporary slot's snapshot, whose
position becomes each such table's sync position: the stream skips that
table's changes in transactions ending at or before it.

The full-load step's outputs (ctx.out) hold the bookkeeping: units, done
(unit ids), slot (what was created: name, publication, lsn, progress
record; cleanup and `pgtide abandon` drop only that), slot_pending (the
name, before the slot is recorded), pass_lsn (the position of the current
pass's snapshot), unit_lsn (unit id -> the pass it was copied in), sync.

  resume.load_snapshot(ctx)     -- the snapshot to copy under (nil: a fresh one / none needed)
  resume.release_snapshot(ctx)  -- end the session holding it (after the load)
  resume.unit_done(out, u)      -- record the pass a finished unit was copied in
  resume.sync_positions(ctx)    -- the tables the stream skips up to their copy's position
  resume.slot_is_ours(ctx, name), resume.foreign_slot_message(ctx, name)

Errors raise: pg and cdc errors as they come, step failures (runbook.fail)
for a slot this migration did not make.
]]
local runbook = require "pgtide.runbook"
local util = require "pgtide.util"
local names_of = require("pgtide.names").of
local apply_plan = require "pgtide.apply_plan"
local scope = require "pgtide.local_scope"
local cdc = require "core.cdc"
local log = require "log"
local sys = require "sys"

local M = {}

--[[ The publication: FOR TABLE the planned tables (partition leaves
  included), created before the slot so that pgoutput sees it from the
  slot's first change.  Listing the tables (rather than FOR ALL TABLES)
  needs only their ownership, and leaves out tables the migration does
  not copy (excluded schemas, tables created later), whose changes the
  target could not take. ]]
local function ensure_publication(ctx, name)
  if ctx.params.publication then return ctx.params.publication, false end
  if ctx.src:query_one("SELECT 1 AS x FROM pg_publication WHERE pubname = $1", name) then return name, true end
  local list = {}
  for _, t in ipairs(scope.unit_tables(ctx)) do
    if not t.unlogged then list[#list + 1] = t.qname end
  end
  local sql = "CREATE PUBLICATION " .. ctx.src:quote_ident(name)
  if #list > 0 then sql = sql .. " FOR TABLE " .. table.concat(list, ", ") end
  ctx.src:exec(sql)
  log.info("full load: created publication %s (%d tables)", name, #list)
  return name, true
end

-- Did this migration create the slot named 'name'?  (Its state says so.)
function M.slot_is_ours(ctx, name)
  local fl = ctx.outputs["full-load"] or {}
  return fl.slot_pending == name or (fl.slot ~= nil and fl.slot.name == name)
end

-- The step failure's text for a slot of this name this migration did not
-- create (shared with preflight's slot_name check).
function M.foreign_slot_message(ctx, name)
  return string.format("a replication slot named %s already exists on the source, and this migration's "
    .. "state (in %s) does not record creating it: either another migration named '%s' uses it, or "
    .. "this migration's state directory was lost or replaced. For another migration, give this one its "
    .. "own name (name=NAME, or 'name' in the config file). To start this one over, drop what the "
    .. "earlier attempt left: SELECT pg_drop_replication_slot('%s') on the source, its publication, and "
    .. "the target's tables (docs/troubleshooting.md, \"Starting over\")", name, ctx.state_dir, ctx.name, name)
end

local open_slots = setmetatable({}, { __mode = "k" })   -- ctx -> slot object holding the snapshot

local resume_snapshot

--[[ The snapshot the full load uses.  Without CDC: nil (the load exports
  a fresh one).  With CDC: the exported snapshot of this migration's
  replication slot, created here (after the publication) before any row
  is copied; the slot's position is where the stream will start.

  A snapshot lives only as long as the session that exported it, so a
  load interrupted by a crash cannot continue under it.  The slot itself
  survives, still at its first position (nothing consumed it), so the
  tables copied completely under the old snapshot are kept.  The others
  are copied again, every unit of them, under a new snapshot taken from
  a temporary slot; that slot's position is each such table's sync LSN,
  and the stream skips the table's changes in transactions that end at
  or before it (its copy holds them).  When the slot is gone, the old
  copies cannot be caught up and everything starts over.  When every
  unit was already recorded, no snapshot is needed. ]]
function M.load_snapshot(ctx)
  if not ctx.params.cdc then return nil end
  local out = ctx.out
  local n = names_of(ctx.name)
  local info = cdc.slot_info { source = ctx.params.source, slot = n.slot }
  local done = {}
  for _, id in ipairs(out.done or {}) do done[id] = true end
  local all_done = out.units ~= nil and #out.units > 0
  for _, u in ipairs(out.units or {}) do
    if not done[u.id] then all_done = false; break end
  end
  if all_done and info.exists and out.slot and out.slot.name == n.slot then
    log.info("full load: every unit was copied under slot %s's snapshot; nothing left to copy", n.slot)
    return nil
  end
  if info.exists and not M.slot_is_ours(ctx, n.slot) then
    runbook.fail("%s", M.foreign_slot_message(ctx, n.slot))
  end
  out.unit_lsn = out.unit_lsn or {}
  if info.exists and out.slot and out.slot.name == n.slot then
    return resume_snapshot(ctx, n)
  end
  -- the progress record is bound to this migration (pgtide.apply_plan); one left by an
  -- earlier attempt would make the new slot's stream skip changes: reset it with the slot
  local plan = apply_plan.for_run(ctx)
  local identity = apply_plan.identity(ctx.src, n.slot)
  local record = apply_plan.record_name(n.slot, identity)
  cdc.drop { source = info.exists and ctx.params.source or nil, slot = info.exists and n.slot or nil,
             target = ctx.params.target, origin = record, progress = plan.progress, identity = identity }
  out.done, out.unit_lsn = {}, {}
  out.slot = nil
  out.slot_pending = n.slot   -- ours even if we die before recording it below
  ctx:save()
  local publication, created = ensure_publication(ctx, n.publication)
  runbook.crash_point("full-load:publication")
  local existing = ctx.dst:query_one([[SELECT to_regnamespace('pgtide') IS NOT NULL AS schema,
                                              to_regclass('pgtide.cdc_progress') IS NOT NULL AS tbl]])
  local slot = cdc.create_slot { source = ctx.params.source, slot = n.slot, publication = publication }
  open_slots[ctx] = slot
  runbook.crash_point("full-load:slot")
  out.slot = { name = n.slot, publication = publication, publication_created = created, lsn = slot.lsn,
               created_at = util.now_iso(), identity = identity, record = record, progress = plan.progress,
               -- what cleanup may drop: only what pgtide made
               progress_schema_existed = existing.schema, progress_table_existed = existing.tbl }
  out.pass_lsn = slot.lsn
  ctx:save()
  log.info("full load: slot %s created at %s; the copy uses its snapshot %s", n.slot, slot.lsn,
    slot.snapshot)
  return slot.snapshot
end

--[[ The resume half of load_snapshot: the slot exists at its first
  position.  Keeps each table whose units all finished under one
  snapshot; forgets the units of the others (copied again, whole); takes
  a new snapshot at a temporary slot's position for them. ]]
function resume_snapshot(ctx, n)
  local out = ctx.out
  local by_table, order = {}, {}
  for _, u in ipairs(out.units) do
    local k = u.schema .. "." .. u.table
    if not by_table[k] then by_table[k] = {}; order[#order + 1] = k end
    local t = by_table[k]
    t[#t + 1] = u.id
  end
  local done = {}
  for _, id in ipairs(out.done or {}) do done[id] = true end
  local keep, redo, kept_tables = {}, {}, 0
  for _, k in ipairs(order) do
    local lsn, whole = nil, true
    for _, id in ipairs(by_table[k]) do
      local l = out.unit_lsn[id] or out.slot.lsn   -- units of older states: the first pass
      if not done[id] or (lsn and l ~= lsn) then whole = false; break end
      lsn = l
    end
    if whole then
      kept_tables = kept_tables + 1
      for _, id in ipairs(by_table[k]) do keep[#keep + 1] = id end
    else
      redo[#redo + 1] = k
      for _, id in ipairs(by_table[k]) do out.unit_lsn[id] = nil end
    end
  end
  out.done = keep
  -- a name of its own per process: a killed run's temporary slot may linger a moment
  local suffix = "_r" .. sys.getpid()
  local tmp = cdc.create_slot { source = ctx.params.source, temporary = true,
                                slot = n.slot:sub(1, 63 - #suffix) .. suffix }
  open_slots[ctx] = tmp
  out.pass_lsn = tmp.lsn
  ctx:save()
  log.warn("full load: resuming after an interruption under slot %s (kept at %s): %d table(s) copied "
    .. "before are kept; %d are copied again under a new snapshot at %s, and the stream skips their "
    .. "changes up to there", n.slot, out.slot.lsn, kept_tables, #redo, tmp.lsn)
  return tmp.snapshot
end

-- End the session that exports the slot's snapshot (after the load).
function M.release_snapshot(ctx)
  local slot = open_slots[ctx]
  if slot then
    open_slots[ctx] = nil
    slot:close()
  end
end

-- A unit finished: it was copied in the current pass (with CDC).
function M.unit_done(out, u)
  if out.pass_lsn then out.unit_lsn[u.id] = out.pass_lsn end
end

--[[ After the load, with CDC: the tables copied under a later snapshot
  than the slot's (a resumed load), as out.sync = { {schema, table, lsn} }:
  the stream skips their changes up to that snapshot. ]]
function M.sync_positions(ctx)
  local out = ctx.out
  if ctx.params.cdc and out.slot then
    local sync, seen = {}, {}
    for _, u in ipairs(out.units) do
      local l, k = out.unit_lsn and out.unit_lsn[u.id], u.schema .. "." .. u.table
      if l and l ~= out.slot.lsn and not seen[k] then
        seen[k] = true
        sync[#sync + 1] = { schema = u.schema, table = u.table, lsn = l }
      end
    end
    out.sync = sync
  end
end

return M
