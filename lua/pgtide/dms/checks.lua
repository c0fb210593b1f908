--[[
pgtide.dms.checks: the preflight checks only the DMS runbooks need.  They
run after the shared ones (pgtide.preflight) and are reported with them,
in the same shape: { id, title, status = pass|warn|fail, message, fix }.
Nothing is changed on either server: the checks read catalogs only.

  checks.run(env) -> results
  checks.merge(report, results)      appends results to a preflight report

env: src, dst (connections), sentinel_schema, heartbeat (boolean),
heartbeat_schema, control_schema ("" = the target's default schema),
pg_dump (path or nil), slot (this migration's slot name),
retained_warn_mb (default 1024), task_settings (the decoded document)
and task_settings_name (how to call it), migration_type, cdc_slot.

  pg_dump          a pg_dump at least as new as the source (schema step)
  source_objects   what pgtide and DMS create on the source: pgtide's
                   cutover sentinel table, DMS's WAL heartbeat table
                   (awsdms_heartbeat, in HeartbeatSchema).  Both need
                   CREATE on their schema, which PostgreSQL 15+ no longer
                   grants on public to every role.
  dms_cdc_role     the source role DMS documents for CDC on RDS/Aurora
  target_control   DMS's control tables on the target (awsdms_apply_exceptions
                   always, validation tables when validation is on)
  slot_retention   logical slots keeping more WAL than retained_warn_mb
                   (this migration's on a rerun, and any other)
  cdc_slot         migration_type=cdc: the user's slot exists, decodes with
                   test_decoding, belongs to this database, is free
  task_settings    the settings document against DMS's documentation
                   (pgtide.dms.task_settings): rejected values fail, keys
                   DMS ignores warn
]]
local catalog = require "pgtide.catalog"
local cutover = require "pgtide.cutover"

local M = {}

local qi = catalog.quote_ident

-- What the current role can do with table 'qname' (nil when it does
-- not exist) and in schema 'schema'.
local function privileges(conn, schema, qname)
  return conn:query_one([[
    select current_user as me,
           exists (select 1 from pg_namespace where nspname = $1) as schema_exists,
           coalesce((select has_schema_privilege(oid, 'CREATE') from pg_namespace where nspname = $1), false)
             as can_create,
           (select pg_get_userbyid(nspowner) from pg_namespace where nspname = $1) as schema_owner,
           to_regclass($2) is not null as exists,
           case when to_regclass($2) is not null then has_table_privilege($2, 'SELECT') end as can_select,
           case when to_regclass($2) is not null then has_table_privilege($2, 'INSERT') end as can_insert,
           case when to_regclass($2) is not null then has_table_privilege($2, 'UPDATE') end as can_update,
           case when to_regclass($2) is not null
                then pg_get_userbyid((select relowner from pg_class where oid = to_regclass($2))) end as owner]],
    schema, qname)
end

-- Owner text for a fix: "the owner of schema public (app)".
local function schema_owner_text(p, schema)
  if p.schema_owner == "pg_database_owner" then
    return string.format("the database owner (owner of schema %s; on RDS/Aurora the master user)", schema)
  end
  return string.format("the owner of schema %s (%s)", schema, tostring(p.schema_owner))
end

local function source_objects(env)
  local problems, fixes, notes, ok_parts = {}, {}, {}, {}
  local grant_create = {}       -- schema -> privileges row (one GRANT per schema)
  local sentinel = cutover.sentinel_table(env.sentinel_schema)
  local p = privileges(env.src, env.sentinel_schema, sentinel)
  local me = p.me
  if p.exists then
    if not (p.can_select and p.can_insert) then
      problems[#problems + 1] = string.format("cannot write pgtide's cutover sentinel table %s (owned by %s)",
        sentinel, tostring(p.owner))
      fixes[#fixes + 1] = string.format("as %s: GRANT SELECT, INSERT ON %s TO %s;", tostring(p.owner), sentinel, qi(me))
    else
      ok_parts[#ok_parts + 1] = "write the cutover sentinel table " .. sentinel
      if p.owner ~= me then
        notes[#notes + 1] = string.format("%s belongs to %s: cleanup leaves it for its owner to drop", sentinel,
          tostring(p.owner))
      end
    end
  elseif not p.can_create then
    problems[#problems + 1] = string.format("cannot create pgtide's cutover sentinel table %s (no CREATE on schema %s)",
      sentinel, env.sentinel_schema)
    grant_create[env.sentinel_schema] = p
  else
    ok_parts[#ok_parts + 1] = "create the cutover sentinel table " .. sentinel
  end
  if env.heartbeat then
    local hs = env.heartbeat_schema or "public"
    local hb = catalog.qname(hs, "awsdms_heartbeat")
    local h = privileges(env.src, hs, hb)
    if h.exists then
      if not (h.can_select and h.can_insert and h.can_update) then
        problems[#problems + 1] = string.format("DMS cannot write its WAL heartbeat table %s (owned by %s)", hb,
          tostring(h.owner))
        fixes[#fixes + 1] = string.format("as %s: GRANT SELECT, INSERT, UPDATE ON %s TO %s;", tostring(h.owner), hb,
          qi(me))
      else
        ok_parts[#ok_parts + 1] = "write DMS's heartbeat table " .. hb
      end
    elseif not h.schema_exists then
      problems[#problems + 1] = string.format("the heartbeat schema %s does not exist", hs)
      fixes[#fixes + 1] = string.format("create schema %s, or set heartbeat_schema to an existing one", hs)
    elseif not h.can_create then
      problems[#problems + 1] = string.format("DMS cannot create its WAL heartbeat table %s (heartbeatEnable; no "
        .. "CREATE on schema %s)", hb, hs)
      grant_create[hs] = h
    else
      ok_parts[#ok_parts + 1] = "let DMS create its heartbeat table " .. hb
    end
  end
  for schema, row in pairs(grant_create) do
    local alt = ""
    if schema == env.sentinel_schema then
      alt = string.format(" Without that grant: as %s, %s; GRANT SELECT, INSERT ON %s TO %s;%s",
        schema_owner_text(row, schema), cutover.sentinel_ddl(schema), sentinel, qi(me),
        env.heartbeat and " and run with heartbeat=false (a quiet source then keeps WAL until the next change)" or "")
    end
    table.insert(fixes, 1, string.format("as %s: GRANT CREATE ON SCHEMA %s TO %s;%s", schema_owner_text(row, schema),
      qi(schema), qi(me), alt))
  end
  if #problems > 0 then
    return "fail", string.format("source user %s %s", me, table.concat(problems, "; ")), table.concat(fixes, " ")
  end
  local msg = string.format("source user %s can %s", me, table.concat(ok_parts, " and "))
  if #notes > 0 then msg = msg .. " (" .. table.concat(notes, "; ") .. ")" end
  return "pass", msg
end

-- DMS's documentation for an RDS/Aurora source: "Use the master user, or
-- a user with rds_superuser and rds_replication" for CDC
-- (CHAP_Source.PostgreSQL, "Working with AWS-managed PostgreSQL").
local function dms_cdc_role(env)
  local r = env.src:query_one([[
    select current_user as me, r.rolsuper as super,
           exists (select 1 from pg_roles where rolname = 'rds_superuser') as rds,
           exists (select 1 from pg_roles g where g.rolname = 'rds_superuser'
                     and pg_has_role(r.oid, g.oid, 'member')) as rds_super
      from pg_roles r where r.rolname = current_user]])
  if r.super then return "pass", string.format("source user %s is a superuser", r.me) end
  if not r.rds then
    return "pass", string.format("source user %s: not an RDS/Aurora source (DMS documents superuser or "
      .. "REPLICATION with a pre-created slot for self-managed sources)", r.me)
  end
  if r.rds_super then return "pass", string.format("source user %s is a member of rds_superuser", r.me) end
  return "warn", string.format("source user %s is not a member of rds_superuser: AWS DMS documents the master "
    .. "user, or a user with rds_superuser and rds_replication, for change data capture from RDS/Aurora",
    r.me), string.format("as the master user: GRANT rds_superuser TO %s; or give the master user as the source "
    .. "(pgtide itself needs only REPLICATION, CONNECT, USAGE and SELECT)", qi(r.me))
end

local function target_control(env)
  local schema = (env.control_schema and env.control_schema ~= "") and env.control_schema or nil
  local row = env.dst:query_one([[
    select current_user as me, r.rolsuper as super, has_database_privilege(current_database(), 'CREATE') as db_create,
           current_database() as db,
           coalesce((select has_schema_privilege(oid, 'CREATE') from pg_namespace
                      where nspname = coalesce($1, current_schema())), false) as can_create,
           exists (select 1 from pg_namespace where nspname = coalesce($1, current_schema())) as schema_exists,
           coalesce($1, current_schema()) as schema
      from pg_roles r where r.rolname = current_user]], schema)
  local where = schema and ("control schema " .. schema) or ("schema " .. tostring(row.schema))
  if row.super or row.can_create or (not row.schema_exists and row.db_create) then
    return "pass", string.format("target user %s can create DMS's control tables (awsdms_apply_exceptions, "
      .. "awsdms_validation_failures_v1) in %s%s", row.me, where,
      row.schema_exists and "" or " (DMS creates the schema)")
  end
  if not row.schema_exists then
    return "fail", string.format("target user %s cannot create DMS's %s (no CREATE on database %s)", row.me, where,
      row.db), string.format("GRANT CREATE ON DATABASE %s TO %s;", qi(row.db), qi(row.me))
  end
  return "fail", string.format("target user %s cannot create DMS's control tables in %s (awsdms_apply_exceptions "
    .. "is always created there)", row.me, where),
    string.format("as the owner of %s: GRANT CREATE ON SCHEMA %s TO %s;", where, qi(row.schema), qi(row.me))
end

-- pg_dump for the schema step: at least the source's major version.
local function pg_dump(env)
  local ok, tools = pcall(require("pgtide.schema").find_tools, env.src:server_version(), env.pg_dump)
  if not ok then
    return "fail", require("pgtide.errors").message(tools), "install the client tools named above, or give "
      .. "pg_dump=PATH"
  end
  return "pass", string.format("%s (version %d) dumps the source schema", tools.pg_dump, tools.major)
end

--[[
WAL the source's logical slots keep: a slot nobody consumes (a stopped
task, an abandoned migration) or whose database is quiet (no heartbeat)
holds every WAL segment written since its restart_lsn, in every
database, until the disk fills.  Warns above env.retained_warn_mb.
]]
local function slot_retention(env)
  local limit = (env.retained_warn_mb or 1024) * 1024 * 1024
  local rows = env.src:query([[
    select slot_name as name, active, database, plugin,
           pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint as retained
      from pg_replication_slots where slot_type = 'logical' and restart_lsn is not null order by 1]])
  local big, lines = {}, {}
  for _, r in ipairs(rows) do
    if r.retained > limit then
      big[#big + 1] = r
      lines[#lines + 1] = string.format("%s%s (%s, %s) keeps %s", r.name, r.name == env.slot and " (this migration's)"
        or "", r.active and "active" or "inactive", tostring(r.database), require("pgtide.util").format_bytes(r.retained))
    end
  end
  if #big == 0 then
    return "pass", string.format("%d logical slot(s), none keeps more than %d MB of WAL", #rows,
      env.retained_warn_mb or 1024)
  end
  local fixes = {}
  for _, r in ipairs(big) do
    if r.name == env.slot then
      fixes[#fixes + 1] = string.format("%s: restart its task, or finish the migration and run cleanup (it drops "
        .. "the slot); keep heartbeat=true so a quiet database releases WAL", r.name)
    elseif not r.active then
      fixes[#fixes + 1] = string.format("%s: if nothing uses it any more, SELECT pg_drop_replication_slot('%s');",
        r.name, r.name)
    else
      fixes[#fixes + 1] = string.format("%s: its consumer is behind; check it", r.name)
    end
  end
  return "warn", string.format("logical slot(s) keeping more than %d MB of WAL on the source (it fills the disk): %s",
    env.retained_warn_mb or 1024, table.concat(lines, "; ")), table.concat(fixes, " ")
end

-- The task settings DMS will get, against its documentation.
local function task_settings_check(env)
  if not env.task_settings then return "pass", "no task settings document (the template's own)" end
  local problems = require("pgtide.dms.task_settings").check(env.task_settings)
  local errs, warns = {}, {}
  for _, p in ipairs(problems) do
    if p.level == "error" then errs[#errs + 1] = p.text else warns[#warns + 1] = p.text end
  end
  if #errs > 0 then
    for _, w in ipairs(warns) do errs[#errs + 1] = w end
    return "fail", table.concat(errs, "; "), "correct the task settings (task_settings_file) to DMS's documented values"
  end
  if #warns > 0 then
    return "warn", string.format("%s: %s", env.task_settings_name or "the task settings", table.concat(warns, "; ")),
      "nothing to do if that is what you want; otherwise correct the task settings (task_settings_file)"
  end
  return "pass", (env.task_settings_name or "the task settings") .. " follow DMS's documentation"
end

-- migration_type=cdc: the slot the user made when copying the data.
local function cdc_slot(env)
  if env.migration_type ~= "cdc" then return "pass", "migration type " .. tostring(env.migration_type) end
  if not env.cdc_slot or env.cdc_slot == "" then
    return "fail", "migration_type=cdc needs cdc_slot, the slot made when the target's data was copied",
      "create a test_decoding slot with an exported snapshot (CREATE_REPLICATION_SLOT name LOGICAL test_decoding "
      .. "EXPORT_SNAPSHOT on a replication connection), copy the data under that snapshot (pg_dump --snapshot), then "
      .. "give cdc_slot=name; or use migration_type=full-load-and-cdc"
  end
  local r = env.src:query_one([[select plugin, active, database = current_database() as here,
                                       pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint as behind
                                  from pg_replication_slots where slot_name = $1]], env.cdc_slot)
  if not r then
    return "fail", string.format("cdc_slot %s does not exist on the source", env.cdc_slot),
      "give the name of the slot created when the data was copied (SELECT slot_name FROM pg_replication_slots)"
  end
  if r.plugin ~= "test_decoding" or not r.here then
    return "fail", string.format("cdc_slot %s is a %s slot%s", env.cdc_slot, tostring(r.plugin),
      r.here and "" or " of another database"), "DMS decodes with test_decoding: use a test_decoding slot of this database"
  end
  if r.active then
    return "fail", string.format("cdc_slot %s is in use by another session", env.cdc_slot),
      "stop what reads it (SELECT active_pid FROM pg_replication_slots WHERE slot_name = ...)"
  end
  return "pass", string.format("cdc_slot %s (test_decoding) is there; DMS starts at its position (%s of WAL since)",
    env.cdc_slot, require("pgtide.util").format_bytes(r.behind or 0))
end

M.CHECKS = {
  { id = "pg_dump", title = "pg_dump for the source's version", run = pg_dump },
  { id = "source_objects", title = "Objects pgtide and DMS create on the source", run = source_objects },
  { id = "dms_cdc_role", title = "Source role DMS documents for CDC", run = dms_cdc_role },
  { id = "target_control", title = "DMS control tables on the target", needs_target = true, run = target_control },
  { id = "slot_retention", title = "WAL kept by replication slots", run = slot_retention },
  { id = "task_settings", title = "Task settings as DMS reads them", run = task_settings_check },
  { id = "cdc_slot", title = "Slot of a CDC-only migration", run = cdc_slot },
}

--[[
checks.run(env) -> results.  A check that raises is a failure carrying
the error, so one broken check never hides the others.
]]
function M.run(env)
  local out = {}
  for _, def in ipairs(M.CHECKS) do
    out[#out + 1] = require("pgtide.preflight").run_check(def.id, def, env)
  end
  return out
end

-- Append 'results' to a preflight report (results and counts).
function M.merge(report, results)
  for _, r in ipairs(results) do
    report.results[#report.results + 1] = r
    report.counts[r.status] = (report.counts[r.status] or 0) + 1
  end
  return report
end

return M
