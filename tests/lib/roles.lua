--[[
roles.lua: the database roles real users migrate with, made on a test
cluster (tests/lib/t.lua's T.cluster).  Tests connect as these roles,
never as postgres, except to set them up and to compare the result.

  local roles = require "roles"
  local dst = roles.planetscale(c, "app")   -- PlanetScale's default role
  dst.conninfo                              -- "... user=pscale_admin dbname=app"
  local src = roles.rds(c, "shop")          -- an RDS/Aurora-like source
  src.owner, src.migrator                   -- conninfos of app (master-like owner) and migrator
  src.grant()                               -- (again) the documented grants, after tables exist
  roles.conninfo(c, user, db)               -- any role's conninfo on c

The PlanetScale role is made exactly as PlanetScale documents its default
role (planetscale-dms-facts.md 5.5): NOSUPERUSER CREATEDB CREATEROLE
INHERIT LOGIN REPLICATION BYPASSRLS, member of pg_read_all_data,
pg_write_all_data, pg_monitor, pg_read_all_settings, pg_read_all_stats,
pg_stat_scan_tables, pg_signal_backend, pg_checkpoint, and on 16+
pg_create_subscription and pg_use_reserved_connections, on 17+
pg_maintain (the predefined roles a server version does not have are
left out), and owner of the target database.  What this cannot
reproduce: PlanetScale's own extensions (pg_strict refuses UPDATE and
DELETE without WHERE; pg_pscale_utils).

The RDS-like source has:
  app       the master user: NOSUPERUSER CREATEDB CREATEROLE LOGIN, member
            of rds_superuser (itself member of pg_monitor and
            pg_signal_backend, as on RDS) and rds_replication; owner of
            the database and of the tables the test creates as app.  On
            RDS, rds_replication is what lets the master user create
            logical slots; vanilla PostgreSQL needs the REPLICATION
            attribute for that, so app has it.
  migrator  what the RDS documentation tells users to create for a
            migration: LOGIN REPLICATION, CONNECT on the database, USAGE on
            its schemas, SELECT on all tables and sequences (and by
            default privileges on future ones).  Owns nothing.
Passwords: the role_password secret, written to $PGPASSFILE.
]]
local T = require "t"

local M = {}

local function pgpass_add(c, user)
  local file = os.getenv("PGPASSFILE") or (c.dir .. "/pgpass")
  local pw = T.secret("role_password")
  local f = assert(io.open(file, "a"))
  for _, h in ipairs { "127.0.0.1", "localhost" } do
    f:write(string.format("%s:%d:*:%s:%s\n", h, c.port, user, pw))
  end
  f:close()
end

-- The conninfo of role 'user' on cluster c, database 'db'.
function M.conninfo(c, user, db)
  local s = c.conninfo:gsub("user=%S+", "user=" .. user):gsub("dbname=%S+", "dbname=" .. db)
  return s
end

local function major(c)
  return tonumber(c:sql("SHOW server_version_num")) // 10000
end

-- Create role 'name' unless it exists, with 'attrs' and the test password.
local function create_role(c, name, attrs)
  c:sql(string.format([[DO $$ BEGIN
      IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '%s') THEN
        CREATE ROLE %s %s PASSWORD '%s';
      END IF; END $$]], name, name, attrs, T.secret("role_password")))
  if attrs:find("LOGIN") then pgpass_add(c, name) end
end

-- Grant the roles of 'list' that this server version has to 'who'.
local function grant_existing(c, list, who)
  c:sql(string.format([[DO $$ DECLARE r text; BEGIN
      FOREACH r IN ARRAY ARRAY['%s'] LOOP
        IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
          EXECUTE format('GRANT %%I TO %s', r);
        END IF;
      END LOOP; END $$]], table.concat(list, "','"), who))
end

M.PLANETSCALE_ROLES = { "pg_read_all_data", "pg_write_all_data", "pg_monitor", "pg_read_all_settings",
                        "pg_read_all_stats", "pg_stat_scan_tables", "pg_signal_backend", "pg_checkpoint",
                        "pg_create_subscription", "pg_use_reserved_connections", "pg_maintain" }

--[[ planetscale(c, db) -> { user, conninfo, db }: PlanetScale's default
  role (pscale_admin) and a database 'db' it owns. ]]
function M.planetscale(c, db)
  create_role(c, "pscale_admin", "NOSUPERUSER CREATEDB CREATEROLE INHERIT LOGIN REPLICATION BYPASSRLS")
  grant_existing(c, M.PLANETSCALE_ROLES, "pscale_admin")
  c:sql(string.format("CREATE DATABASE %s OWNER pscale_admin", db))
  return { user = "pscale_admin", db = db, conninfo = M.conninfo(c, "pscale_admin", db), major = major(c) }
end

--[[ rds(c, db) -> { owner, migrator, grant, db }: an RDS-like master user
  'app' owning database 'db', and the non-owner 'migrator' with the
  documented grants.  Call grant() again after creating schemas (USAGE
  is per schema). ]]
function M.rds(c, db)
  create_role(c, "rds_superuser", "NOLOGIN")
  create_role(c, "rds_replication", "NOLOGIN")
  grant_existing(c, { "pg_monitor", "pg_signal_backend" }, "rds_superuser")
  create_role(c, "app", "NOSUPERUSER CREATEDB CREATEROLE INHERIT LOGIN REPLICATION")
  c:sql("GRANT rds_superuser, rds_replication TO app")
  create_role(c, "migrator", "NOSUPERUSER INHERIT LOGIN REPLICATION")
  c:sql(string.format("CREATE DATABASE %s OWNER app", db))
  c:sql(string.format("GRANT CONNECT ON DATABASE %s TO migrator", db))
  local r = { db = db, owner = M.conninfo(c, "app", db), migrator = M.conninfo(c, "migrator", db),
              major = major(c) }
  function r.grant()
    c:sql([[DO $$ DECLARE s text; BEGIN
        FOR s IN SELECT nspname FROM pg_namespace
                  WHERE nspname NOT LIKE 'pg\_%' AND nspname <> 'information_schema' LOOP
          EXECUTE format('GRANT USAGE ON SCHEMA %I TO migrator', s);
          EXECUTE format('GRANT SELECT ON ALL TABLES IN SCHEMA %I TO migrator', s);
          EXECUTE format('GRANT SELECT ON ALL SEQUENCES IN SCHEMA %I TO migrator', s);
          EXECUTE format('ALTER DEFAULT PRIVILEGES FOR ROLE app IN SCHEMA %I '
                         'GRANT SELECT ON TABLES TO migrator', s);
          EXECUTE format('ALTER DEFAULT PRIVILEGES FOR ROLE app IN SCHEMA %I '
                         'GRANT SELECT ON SEQUENCES TO migrator', s);
        END LOOP; END $$]], db)
  end
  r.grant()
  return r
end

return M
