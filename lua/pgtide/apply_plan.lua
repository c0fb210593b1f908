--[[
pgtide.apply_plan: how pgtide's own engine writes changes on a given
target, decided once from what the target role may do (pgtide.privileges)
and the parameters, so that preflight, the steps and `pgtide status` say
the same thing.

Two choices:
  triggers   "replica_role": the apply and copy sessions run with
             session_replication_role = replica, so the target's user
             triggers (and rules) do not fire for replicated rows.  Needs
             superuser, or GRANT SET ON PARAMETER session_replication_role
             (PostgreSQL 15+), detected from the catalogs, never attempted.
             "disable": otherwise.  The user triggers of the migrated tables
             are disabled (ALTER TABLE ... DISABLE TRIGGER, by name, only
             those that fire in origin mode) while rows are copied or
             changes stream, and enabled again at cutover (or after the
             load without CDC).  pgtide's role owns the tables it creates.
             Foreign keys are added at cutover in both cases.
  progress   "origin": a replication origin records the applied position
             (superuser, or EXECUTE on the pg_replication_origin_*
             functions).  "table": a row in pgtide.cdc_progress, which
             validation skips and cleanup removes (CREATE on the database,
             or on an existing schema pgtide).

  local plan = apply_plan.decide(dst, { replica_role = "auto" })
  plan.triggers, plan.triggers_why, plan.progress, plan.progress_why
  plan.triggers_problem, plan.progress_problem   -- { message, fix } or nil
  apply_plan.describe(plan) -> one line for the log and `pgtide status`

The progress record is bound to the migration: its name carries a hash of
the source's system identifier, database and slot (apply_plan.record_name),
and a progress row also stores that identity (apply.c refuses a row of
another migration), so two migrations into one target cluster never share
a position.
]]
local privileges = require "pgtide.privileges"
local util = require "pgtide.util"

local M = {}

M.PROGRESS_SCHEMA = "pgtide"
M.PROGRESS_TABLE = "pgtide.cdc_progress"

--[[ decide(dst, opts) -> plan.  opts.replica_role: "auto" (default),
  "true" (require it) or "false" (disable triggers instead).  Reads only. ]]
function M.decide(dst, opts)
  opts = opts or {}
  local want = tostring(opts.replica_role == nil and "auto" or opts.replica_role)
  local t = privileges.target(dst)
  local plan = { target_user = t.user }
  if t.replica_role and want ~= "false" then
    plan.triggers, plan.triggers_why = "replica_role", t.replica_role_why
  else
    plan.triggers = "disable"
    plan.triggers_why = want == "false" and "replica_role=false"
      or ("target user " .. t.user .. " may not SET session_replication_role")
    if want == "true" then
      plan.triggers_problem = {
        message = string.format("replica_role=true, but target user %s may not SET "
          .. "session_replication_role (not a superuser%s)", t.user,
          t.major >= 15 and ", and SET on the parameter is not granted" or ""),
        fix = (t.major >= 15 and string.format("as a superuser: GRANT SET ON PARAMETER "
          .. "session_replication_role TO %s; or ", t.user) or "")
          .. "replica_role=auto (pgtide then disables the migrated tables' user triggers until cutover)",
      }
    end
  end
  if t.origins then
    plan.progress = "origin"
    plan.progress_why = t.super and "superuser" or "EXECUTE on the replication origin functions"
  else
    plan.progress = "table"
    plan.progress_why = "no privilege for replication origins"
    local s = t.pgtide_schema
    if s and not s.create then
      plan.progress_problem = {
        message = string.format("the schema pgtide on the target (owner %s) does not let %s create "
          .. "its progress table", s.owner, t.user),
        fix = string.format("as %s: GRANT USAGE, CREATE ON SCHEMA pgtide TO %s;", s.owner, t.user),
      }
    elseif not s and not t.create_on_database then
      plan.progress_problem = {
        message = string.format("target user %s can use neither replication origins nor create the "
          .. "schema pgtide for its progress table (no CREATE on database %s)", t.user, t.database),
        fix = string.format("GRANT CREATE ON DATABASE %s TO %s;", t.database, t.user),
      }
    end
  end
  return plan
end

-- One line: "triggers: ...; progress: ..." for the log and `pgtide status`.
function M.describe(plan, record)
  local trig = plan.triggers == "replica_role"
    and string.format("session_replication_role = replica (%s)", plan.triggers_why)
    or string.format("user triggers of the migrated tables disabled until cutover (%s)", plan.triggers_why)
  local prog = plan.progress == "origin"
    and string.format("replication origin%s", record and (" " .. record) or "")
    or string.format("row%s in %s", record and (" " .. record) or "", M.PROGRESS_TABLE)
  return string.format("triggers: %s; progress: %s", trig, prog)
end

--[[ identity(src, slot) -> text naming this migration's source: system
  identifier, database and slot. ]]
function M.identity(src, slot)
  local r = src:query_one([[SELECT (SELECT system_identifier FROM pg_control_system())::text AS sysid,
                                   current_database() AS db]])
  return string.format("source system %s, database %s, slot %s", r.sysid, r.db, slot)
end

-- The progress record's name for a slot and identity: "<slot>_<hash>".
function M.record_name(slot, identity)
  return slot .. "_" .. util.fnv32(identity)
end

--[[ for_run(ctx [, fresh]) -> the plan of a `local` run: decided from the
  roles' privileges in its preflight, which keeps the result in its
  outputs.  The steps record what they did with it (post-data: the
  triggers it disabled; full-load: the progress record), so a resumed run
  keeps the method it started with.  fresh: decide again.  Raises pg
  errors. ]]
function M.for_run(ctx, fresh)
  local pf = ctx.outputs.preflight
  if not fresh and pf and pf.plan then return pf.plan end
  local plan = M.decide(ctx.dst, { replica_role = ctx.params.replica_role })
  if ctx.out and ctx.step and ctx.step.name == "preflight" then
    ctx.out.plan = { triggers = plan.triggers, triggers_why = plan.triggers_why,
                     progress = plan.progress, progress_why = plan.progress_why }
  end
  return plan
end

return M
