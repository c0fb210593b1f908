--[[
pgtide.privileges: what the migration roles may do on each side, read
from the catalogs without trying anything.  Preflight, `pgtide
troubleshoot permissions` and the local runbook decide their methods from
these pictures, so the three always agree.

  local privileges = require "pgtide.privileges"
  local s = privileges.source(src, scope)   -- scope(schema, table) -> bool, optional
  local t = privileges.target(dst)

source(conn, scope) -> {
  user, database, major, super, replication (REPLICATION attribute, or
  rds_replication membership), owns_database, create_on_database,
  signal_backend (may end other sessions: pg_signal_backend or superuser),
  tables = { {oid, schema, name, qname, owner, owned, can_select, unlogged,
              kind, partition} } in scope, not_owned = {...}, unreadable = {...},
  unlogged = {...}, sequences_unreadable = { {schema, name, qname} },
}
target(conn) -> {
  user, database, major, super, replica_role (may SET
  session_replication_role: superuser, or GRANT SET ON PARAMETER on 15+),
  replica_role_why, origins (may use replication origins), create_on_database,
  temp, owns_database, pgtide_schema = { exists, owner, create } | nil,
}
Everything raises only on a broken connection.
]]
local M = {}

local function major(conn) return conn:server_version() // 10000 end

-- The functions a replication origin needs (apply.c and cleanup).
M.ORIGIN_FUNCTIONS = { "pg_replication_origin_create(text)", "pg_replication_origin_session_setup(text)",
                       "pg_replication_origin_xact_setup(pg_lsn, timestamp with time zone)",
                       "pg_replication_origin_progress(text, boolean)", "pg_replication_origin_drop(text)" }

function M.source(conn, scope)
  local me = conn:query_one([[
    SELECT current_user AS user, current_database() AS database, r.rolsuper AS super,
           r.rolreplication OR EXISTS (SELECT 1 FROM pg_roles g WHERE g.rolname = 'rds_replication'
                                        AND pg_has_role(r.oid, g.oid, 'MEMBER')) AS replication,
           pg_has_role(d.datdba, 'USAGE') AS owns_database,
           has_database_privilege(current_database(), 'CREATE') AS create_on_database,
           r.rolsuper OR pg_has_role('pg_signal_backend', 'USAGE') AS signal_backend
      FROM pg_roles r, pg_database d
     WHERE r.rolname = current_user AND d.datname = current_database()]])
  local out = { user = me.user, database = me.database, major = major(conn), super = me.super,
                replication = me.replication, owns_database = me.owns_database,
                create_on_database = me.create_on_database, signal_backend = me.signal_backend,
                tables = {}, not_owned = {}, unreadable = {}, unlogged = {}, sequences_unreadable = {} }
  for _, r in ipairs(conn:query([[
      SELECT c.oid::int8 AS oid, n.nspname AS schema, c.relname AS name,
             format('%I.%I', n.nspname, c.relname) AS qname, pg_get_userbyid(c.relowner) AS owner, pg_has_role(c.relowner, 'USAGE') AS owned,
             has_table_privilege(c.oid, 'SELECT') AND has_schema_privilege(n.oid, 'USAGE') AS can_select,
             c.relpersistence = 'u' AS unlogged, c.relkind::text AS kind, c.relispartition AS partition
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
       WHERE c.relkind IN ('r', 'p') AND c.relpersistence <> 't'
         AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_'
         AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                           AND d.objid = c.oid AND d.deptype = 'e')
       ORDER BY n.nspname, c.relname]])) do
    if not scope or scope(r.schema, r.name) then
      out.tables[#out.tables + 1] = r
      if not r.owned and not me.super then out.not_owned[#out.not_owned + 1] = r end
      if not r.can_select then out.unreadable[#out.unreadable + 1] = r end
      if r.unlogged then out.unlogged[#out.unlogged + 1] = r end
    end
  end
  for _, r in ipairs(conn:query([[
      SELECT n.nspname AS schema, c.relname AS name, format('%I.%I', n.nspname, c.relname) AS qname
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
       WHERE c.relkind = 'S' AND n.nspname NOT IN ('pg_catalog', 'information_schema')
         AND n.nspname !~ '^pg_'
         AND NOT CASE WHEN c.relkind = 'S'
                      THEN has_sequence_privilege(c.oid, 'SELECT') OR has_sequence_privilege(c.oid, 'USAGE')
                 END
         AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                           AND d.objid = c.oid AND d.deptype = 'e')
       ORDER BY 1, 2]])) do
    if not scope or scope(r.schema, r.name) then
      out.sequences_unreadable[#out.sequences_unreadable + 1] = r
    end
  end
  return out
end

function M.target(conn)
  local v = major(conn)
  local me = conn:query_one([[
    SELECT current_user AS user, current_database() AS database, r.rolsuper AS super,
           has_database_privilege(current_database(), 'CREATE') AS create_on_database,
           has_database_privilege(current_database(), 'TEMP') AS temp,
           pg_has_role(d.datdba, 'USAGE') AS owns_database
      FROM pg_roles r, pg_database d
     WHERE r.rolname = current_user AND d.datname = current_database()]])
  local out = { user = me.user, database = me.database, major = v, super = me.super,
                create_on_database = me.create_on_database, temp = me.temp,
                owns_database = me.owns_database }
  if me.super then
    out.replica_role, out.replica_role_why = true, "superuser"
  elseif v >= 15 and conn:query_one([[SELECT has_parameter_privilege('session_replication_role', 'SET')
                                        AS ok]]).ok then
    out.replica_role, out.replica_role_why = true, "SET granted on session_replication_role"
  else
    out.replica_role = false
  end
  out.origins = me.super
  if not me.super then
    out.origins = true
    for _, f in ipairs(M.ORIGIN_FUNCTIONS) do
      if not conn:query_one("SELECT has_function_privilege($1, 'EXECUTE') AS ok", f).ok then
        out.origins = false
        break
      end
    end
  end
  local s = conn:query_one([[
    SELECT pg_get_userbyid(nspowner) AS owner, has_schema_privilege(oid, 'CREATE') AS create,
           has_schema_privilege(oid, 'USAGE') AS usage
      FROM pg_namespace WHERE nspname = 'pgtide']])
  if s then out.pgtide_schema = { exists = true, owner = s.owner, create = s.create and s.usage } end
  return out
end

return M
