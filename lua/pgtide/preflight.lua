--[[
pgtide.preflight: checks to run before a migration starts.

Each check looks at the source (and the target where it matters) and
gives one result: pass, warn or fail, a message saying what it found,
and for anything short of pass the fix.  Nothing is changed on either
server: the checks only read catalogs and settings.

  local preflight = require "pgtide.preflight"
  local report = preflight.run {
    src = conn, dst = conn,                -- dst optional for source-only checks
    checks = preflight.DMS_RUNBOOK,        -- ids; default: every check
    scope = function (schema, table) ... end,   -- tables to migrate (default: all user tables)
    target_disk_gb = 500,                  -- optional: PlanetScale disk size
    slot = "dms_x_ab12cd",                 -- the migration's own slot (not counted as used)
    dms = true,                            -- apply DMS's rules (wal_sender_timeout...)
  }
  preflight.print(report)                  -- one line per result, fixes indented
  preflight.assert_ok(report)              -- raises listing the failures

Check ids and the seed's names (Aurora guide, "Source database
prerequisites": the 7 validations DMS runs before a task starts):
  version            Database Version Compatibility
  target_privileges  Target Database Privileges
  slots              Replication Slots Available
  select_privileges  Source Database Read Privileges
  wal_level          WAL Level Configuration
  wal_sender_timeout WAL Sender Timeout
  wal_senders        Maximum WAL Senders
and the PlanetScale facts (planetscale-dms-facts.md section 7):
  replication_role, target_version, extensions, disk, primary_keys,
  lossy_types, lob_batch_apply, rls, long_transactions,
  prepared_transactions, slot_wal_keep
and pgtide's own engine (the local runbook), from pgtide.privileges and
the catalogs: source_version, target_temp, source_sequences,
target_triggers, target_progress, publication, write_fence,
unlogged_tables, slot_name, replica_identity, engine_keys,
large_objects, pg_dump, target_empty; M.connect(ctx) checks both
connections first.
]]
local log = require "log"
local apply_plan = require "pgtide.apply_plan"
local privileges = require "pgtide.privileges"
local quote = require "pgtide.quote"
local runbook = require "pgtide.runbook"
local util = require "pgtide.util"

local M = {}

M.DMS_SEVEN = { "version", "target_privileges", "slots", "select_privileges",
                "wal_level", "wal_sender_timeout", "wal_senders" }
M.PLANETSCALE = { "replication_role", "target_version", "extensions", "disk", "primary_keys",
                  "lossy_types", "lob_batch_apply", "rls", "long_transactions",
                  "prepared_transactions", "slot_wal_keep" }
M.DMS_RUNBOOK = {}
for _, id in ipairs(M.DMS_SEVEN) do M.DMS_RUNBOOK[#M.DMS_RUNBOOK + 1] = id end
for _, id in ipairs(M.PLANETSCALE) do M.DMS_RUNBOOK[#M.DMS_RUNBOOK + 1] = id end

-- DMS source support by major version: the replication engine needed.
local dms_engine_for = { [17] = "3.6.1", [16] = "3.5.3", [15] = "3.5.1", [14] = "3.4.7",
                         [13] = "3.4.3", [12] = "3.3.3" }

local function setting(conn, name)
  local row = conn:query_one("select current_setting($1, true) as v", name)
  return row and row.v
end

local function major(num) return num // 10000 >= 10 and num // 10000 or num // 100 end

local function version_text(num)
  if num >= 100000 then return string.format("%d.%d", num // 10000, num % 10000) end
  return string.format("%d.%d.%d", num // 10000, (num // 100) % 100, num % 100)
end

-- Is the server an RDS/Aurora instance?  (rds.* settings exist there.)
local function is_rds(conn)
  local row = conn:query_one([[select exists (select 1 from pg_settings where name like 'rds.%')
    or exists (select 1 from pg_roles where rolname = 'rds_superuser') as rds]])
  return row and row.rds
end

local function qname(schema, name) return string.format("%s.%s", schema, name) end

-- The user tables in scope, with what the checks need to know about them.
local function scoped_tables(env)
  if env._tables then return env._tables end
  local rows = env.src:query([[
    select n.nspname as schema, c.relname as name, c.oid::bigint as oid, c.relkind::text as kind,
           c.relrowsecurity as rls, c.relforcerowsecurity as force_rls,
           pg_get_userbyid(c.relowner) as owner,
           exists (select 1 from pg_constraint k where k.conrelid = c.oid and k.contype = 'p') as has_pk,
           exists (select 1 from pg_index i where i.indrelid = c.oid and i.indisunique
                     and i.indpred is null and i.indexprs is null) as has_unique,
           has_table_privilege(c.oid, 'SELECT') as can_select,
           has_schema_privilege(n.oid, 'USAGE') as schema_usage
      from pg_class c join pg_namespace n on n.oid = c.relnamespace
     where c.relkind in ('r', 'p')
       and n.nspname not in ('pg_catalog', 'information_schema')
       and n.nspname !~ '^pg_toast' and n.nspname !~ '^pg_temp'
       and not exists (select 1 from pg_depend d where d.objid = c.oid and d.deptype = 'e')
     order by 1, 2]])
  local out = {}
  for _, r in ipairs(rows) do
    if not env.scope or env.scope(r.schema, r.name) then out[#out + 1] = r end
  end
  env._tables = out
  return out
end

-- "a, b, c, and 3 more": at most max (10) rows, each shown as show(r),
-- r.display or its qualified schema.name.
local function list_names(rows, max, show)
  max = max or 10
  local names = {}
  for i, r in ipairs(rows) do
    if i > max then names[#names + 1] = string.format("and %d more", #rows - max); break end
    names[#names + 1] = show and show(r) or r.display or qname(r.schema, r.name)
  end
  return table.concat(names, ", ")
end

M.checks = {}
local function check(def) M.checks[def.id] = def end

check {
  id = "version", title = "Database Version Compatibility",
  run = function(env)
    local num = env.src:server_version()
    local m = major(num)
    if num < 90400 then
      return "fail", string.format("source PostgreSQL %s is older than 9.4", version_text(num)),
        "upgrade the source to a supported PostgreSQL version (9.4 or newer; 12 or newer recommended)"
    end
    if m > 17 then
      return "warn", string.format("source PostgreSQL %s: DMS support for sources newer than 17 is not "
        .. "confirmed", version_text(num)),
        "check the AWS DMS release notes for your engine version, or use pgtide's local runbook"
    end
    local engine = dms_engine_for[m]
    local msg = string.format("source PostgreSQL %s is supported by DMS%s", version_text(num),
      engine and (" (replication engine " .. engine .. " or newer)") or "")
    if engine and env.engine_version and env.engine_version ~= "" then
      local function parts(v)
        local a, b, c = tostring(v):match("^(%d+)%.?(%d*)%.?(%d*)")
        return { tonumber(a) or 0, tonumber(b) or 0, tonumber(c) or 0 }
      end
      local have, need = parts(env.engine_version), parts(engine)
      for i = 1, 3 do
        if have[i] ~= need[i] then
          if have[i] < need[i] then
            return "fail", string.format("%s, but the replication instance is set to engine %s",
              msg, env.engine_version), string.format("set engine_version=%s or newer", engine)
          end
          break
        end
      end
    end
    return "pass", msg
  end,
}

check {
  id = "source_version", title = "Source PostgreSQL version",
  run = function(env)
    local num = env.src:server_version()
    if num < 100000 then
      return "fail", string.format("source PostgreSQL %s has no pgoutput logical decoding (10 or newer "
        .. "is needed)", version_text(num)), "upgrade the source, or migrate it with pg_dump and pg_restore"
    end
    if num < 120000 then
      return "warn", string.format("source PostgreSQL %s: pgtide is tested with sources 12 to 18",
        version_text(num)), "run the migration against a copy of the source first"
    end
    return "pass", string.format("source PostgreSQL %s", version_text(num))
  end,
}

check {
  id = "target_privileges", title = "Target Database Privileges", needs_target = true,
  run = function(env)
    local me = env.dst:query_one([[
      select current_user as name, r.rolsuper as super,
             has_database_privilege(current_database(), 'CREATE') as db_create,
             has_database_privilege(current_database(), 'CONNECT') as db_connect,
             has_database_privilege(current_database(), 'TEMP') as db_temp
        from pg_roles r where r.rolname = current_user]])
    if me.super then return "pass", string.format("target user %s is a superuser", me.name) end
    local problems = {}
    if not me.db_connect then problems[#problems + 1] = "CONNECT on the database" end
    if not me.db_create then problems[#problems + 1] = "CREATE on the database (DMS creates its control schema)" end
    local bad = env.dst:query([[
      select n.nspname as schema, c.relname as name
        from pg_class c join pg_namespace n on n.oid = c.relnamespace
       where c.relkind in ('r', 'p') and n.nspname not in ('pg_catalog', 'information_schema')
         and n.nspname !~ '^pg_toast'
         and not (has_table_privilege(c.oid, 'INSERT') and has_table_privilege(c.oid, 'UPDATE')
                  and has_table_privilege(c.oid, 'DELETE') and has_table_privilege(c.oid, 'TRUNCATE'))
       order by 1, 2]])
    local in_scope = {}
    for _, r in ipairs(bad) do
      if not env.scope or env.scope(r.schema, r.name) then in_scope[#in_scope + 1] = r end
    end
    if #in_scope > 0 then
      problems[#problems + 1] = "INSERT, UPDATE, DELETE and TRUNCATE on " .. list_names(in_scope)
    end
    if #problems == 0 then
      return "pass", string.format("target user %s can create objects and write every table", me.name)
    end
    return "fail", string.format("target user %s lacks %s", me.name, table.concat(problems, "; ")),
      string.format("use the PlanetScale default role (it has the required permissions), or "
        .. "GRANT CREATE ON DATABASE ... TO %s and GRANT INSERT, UPDATE, DELETE, TRUNCATE ON ALL "
        .. "TABLES IN SCHEMA ... TO %s", me.name, me.name)
  end,
}

check {
  id = "slots", title = "Replication Slots Available",
  run = function(env)
    local r = env.src:query_one([[
      select current_setting('max_replication_slots')::int as max,
             (select count(*) from pg_replication_slots)::int as used,
             (select count(*) from pg_replication_slots where slot_name = $1)::int as ours]],
      env.slot or "")
    local free = r.max - r.used + r.ours
    -- pgtide's own engine also takes a temporary slot for each consistent point of validation
    local need = env.slots_needed or 1
    if r.max < need then
      return "fail", string.format("max_replication_slots is %d; the migration needs %d", r.max, need),
        string.format("set max_replication_slots >= %d (Aurora/RDS: in the parameter group; requires a "
          .. "restart)", r.used - r.ours + need)
    end
    if free < need then
      return "fail", string.format("%d of %d replication slots are free; the migration needs %d%s", free,
        r.max, need, need > 1 and " (its own, and a temporary one for each consistent point of validation)" or ""),
        "drop unused slots (SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
        .. "WHERE NOT active) or raise max_replication_slots"
    end
    return "pass", string.format("%d of %d replication slots free, %d needed%s", free, r.max, need,
      r.ours > 0 and " (this migration's slot already exists)" or "")
  end,
}

check {
  id = "select_privileges", title = "Source Database Read Privileges",
  run = function(env)
    local tables = scoped_tables(env)
    if #tables == 0 then
      return "fail", "no table to migrate was found in the selected schemas",
        "check the schemas / table mappings parameters"
    end
    local missing = {}
    for _, t in ipairs(tables) do
      if not t.can_select or not t.schema_usage then missing[#missing + 1] = t end
    end
    if #missing > 0 then
      local user = env.src:query_one("select current_user as u").u
      local schemas, seen = {}, {}
      for _, t in ipairs(missing) do
        if not seen[t.schema] then seen[t.schema] = true; schemas[#schemas + 1] = t.schema end
      end
      local fixes = {}
      for _, s in ipairs(schemas) do
        fixes[#fixes + 1] = string.format("GRANT USAGE ON SCHEMA %s TO %s; GRANT SELECT ON ALL TABLES IN "
          .. "SCHEMA %s TO %s;", s, user, s, user)
      end
      return "fail", string.format("%d of %d tables cannot be read: %s", #missing, #tables,
        list_names(missing)), table.concat(fixes, " ")
    end
    return "pass", string.format("the source user can read all %d tables to migrate", #tables)
  end,
}

check {
  id = "wal_level", title = "WAL Level Configuration",
  run = function(env)
    local level = setting(env.src, "wal_level")
    local rds = is_rds(env.src)
    local rds_lr = setting(env.src, "rds.logical_replication")
    if rds and rds_lr and rds_lr ~= "on" and rds_lr ~= "1" then
      return "fail", string.format("rds.logical_replication is %s (wal_level %s)", rds_lr, tostring(level)),
        "set rds.logical_replication = 1 in the DB cluster parameter group (Aurora) or DB parameter "
        .. "group (RDS) and reboot the writer"
    end
    if level ~= "logical" then
      return "fail", string.format("wal_level is '%s'", tostring(level)),
        rds and "set rds.logical_replication = 1 in the DB (cluster) parameter group and reboot"
          or "ALTER SYSTEM SET wal_level = logical; then restart PostgreSQL"
    end
    return "pass", "wal_level is logical" .. (rds and " (rds.logical_replication on)" or "")
  end,
}

check {
  id = "wal_sender_timeout", title = "WAL Sender Timeout",
  run = function(env)
    local row = env.src:query_one([[select setting::bigint as v, unit from pg_settings
                                      where name = 'wal_sender_timeout']])
    local ms = row.v * ((row.unit == "s") and 1000 or (row.unit == "min") and 60000 or 1)
    if ms == 0 then return "pass", "wal_sender_timeout is 0 (disabled), which DMS accepts" end
    if ms < 10000 then
      return "fail", string.format("wal_sender_timeout is %d ms; DMS tasks fail below 10000 ms", ms),
        "set wal_sender_timeout = 0 or >= 10000 (Aurora/RDS: parameter group; or ALTER ROLE <dms user> "
        .. "SET wal_sender_timeout = 0)"
    end
    if ms > 300000 then
      return "warn", string.format("wal_sender_timeout is %d ms; above 5 minutes a failover is detected late", ms),
        "consider a value between 10 s and 5 min, or 0"
    end
    return "pass", string.format("wal_sender_timeout is %d ms (0 or at least 10000 needed)", ms)
  end,
}

check {
  id = "wal_senders", title = "Maximum WAL Senders",
  run = function(env)
    local r = env.src:query_one([[
      select current_setting('max_wal_senders')::int as max,
             (select count(*) from pg_stat_replication)::int as used]])
    if r.max < 2 then
      return "fail", string.format("max_wal_senders is %d", r.max),
        "set max_wal_senders >= 2 (Aurora/RDS: parameter group; requires a restart)"
    end
    local need = env.senders_needed or 1
    if r.max - r.used < need then
      return "fail", string.format("%d of %d WAL senders are free; the migration needs %d%s", r.max - r.used,
        r.max, need, need > 1 and " (the stream, and one for each consistent point of validation)" or ""),
        "stop an unused replication consumer or raise max_wal_senders"
    end
    return "pass", string.format("max_wal_senders is %d, %d free, %d needed", r.max, r.max - r.used, need)
  end,
}

check {
  id = "replication_role", title = "Replication privilege of the source user",
  run = function(env)
    local r = env.src:query_one([[
      select r.rolname as name, r.rolsuper as super, r.rolreplication as repl,
             exists (select 1 from pg_roles g where g.rolname = 'rds_replication'
                       and pg_has_role(r.oid, g.oid, 'member')) as rds_repl
        from pg_roles r where r.rolname = current_user]])
    if r.super or r.repl or r.rds_repl then
      return "pass", string.format("source user %s can use logical replication (%s)", r.name,
        r.super and "superuser" or r.repl and "REPLICATION" or "rds_replication")
    end
    return "fail", string.format("source user %s has neither REPLICATION nor superuser", r.name),
      string.format("ALTER ROLE %s REPLICATION; (RDS/Aurora: GRANT rds_replication, rds_superuser TO %s)",
        r.name, r.name)
  end,
}

check {
  id = "target_version", title = "Target PostgreSQL version", needs_target = true,
  run = function(env)
    local s, t = env.src:server_version(), env.dst:server_version()
    local sm, tm = major(s), major(t)
    if tm < sm then
      return "fail", string.format("target PostgreSQL %s is older than the source's %s", version_text(t),
        version_text(s)), "create the PlanetScale database with PostgreSQL " .. sm .. " or newer"
    end
    if tm < 17 then
      return "warn", string.format("target is PostgreSQL %s; PlanetScale Postgres runs 17 or 18",
        version_text(t)), "check that this is the PlanetScale database you mean to migrate to"
    end
    if tm ~= sm then
      return "warn", string.format("cross-major migration %d -> %d", sm, tm),
        "test the application against PostgreSQL " .. tm .. " before cutover"
    end
    return "pass", string.format("target PostgreSQL %s", version_text(t))
  end,
}

check {
  id = "extensions", title = "Extensions available on the target", needs_target = true,
  run = function(env)
    local used = env.src:query([[select extname as name, extversion as version from pg_extension
                                  where extname <> 'plpgsql' order by 1]])
    if #used == 0 then return "pass", "the source uses no extension besides plpgsql" end
    local avail = {}
    for _, r in ipairs(env.dst:query("select name from pg_available_extensions")) do avail[r.name] = true end
    local missing, names = {}, {}
    for _, r in ipairs(used) do
      names[#names + 1] = r.name
      if not avail[r.name] then missing[#missing + 1] = r.name end
    end
    if #missing > 0 then
      return "fail", "not available on the target: " .. table.concat(missing, ", "),
        "enable them for the PlanetScale database (Dashboard > Extensions; some need a restart), or "
        .. "remove their use from the source schema"
    end
    return "pass", "all extensions are available on the target: " .. table.concat(names, ", ")
  end,
}

check {
  id = "disk", title = "Target disk at least 150% of the source size",
  run = function(env)
    local size = env.src:query_one("select pg_database_size(current_database())::bigint as b").b
    local need = math.ceil(size * 1.5)
    if env.target_disk_gb and env.target_disk_gb > 0 then
      local have = env.target_disk_gb * 1024 * 1024 * 1024
      if have < need then
        return "fail", string.format("source is %s; target disk %d GB is below the %s needed",
          util.format_bytes(size), env.target_disk_gb, util.format_bytes(need)),
          "resize the PlanetScale disk (\"Minimum disk size\"; Metal: choose a larger size)"
      end
      return "pass", string.format("source is %s; target disk %d GB >= %s", util.format_bytes(size),
        env.target_disk_gb, util.format_bytes(need))
    end
    return "warn", string.format("source is %s: the PlanetScale disk needs at least %s",
      util.format_bytes(size), util.format_bytes(need)),
      "check the disk size in the PlanetScale console, then pass target_disk_gb=N to verify it here"
  end,
}

check {
  id = "primary_keys", title = "Tables without a primary key",
  run = function(env)
    local without = {}
    for _, t in ipairs(scoped_tables(env)) do
      if t.kind == "r" and not t.has_pk then without[#without + 1] = t end
    end
    if #without == 0 then return "pass", "every table to migrate has a primary key" end
    local fix = "add a primary key (ALTER TABLE ... ADD PRIMARY KEY (...)), or ALTER TABLE ... REPLICA "
      .. "IDENTITY FULL so DMS (test_decoding) can replicate their UPDATEs and DELETEs"
    return "warn", string.format("%d table(s) without a primary key: %s. DMS ignores UPDATE and DELETE on "
      .. "them during CDC and cannot validate them", #without, list_names(without)), fix
  end,
}

check {
  id = "lossy_types", title = "Types DMS does not migrate exactly",
  run = function(env)
    local cols = env.src:query([[
      select n.nspname as schema, c.relname as name, a.attname as col,
             format_type(a.atttypid, a.atttypmod) as type, t.typtype::text as typtype,
             t.typname as typname, a.atttypmod as typmod, e.typtype::text as elemtype
        from pg_attribute a
        join pg_class c on c.oid = a.attrelid
        join pg_namespace n on n.oid = c.relnamespace
        join pg_type t on t.oid = a.atttypid
        left join pg_type e on e.oid = t.typelem and t.typcategory = 'A'
       where a.attnum > 0 and not a.attisdropped and c.relkind in ('r', 'p')
         and n.nspname not in ('pg_catalog', 'information_schema') and n.nspname !~ '^pg_toast'
       order by 1, 2, a.attnum]])
    local none = { inet = 1, cidr = 1, macaddr = 1, macaddr8 = 1, tsvector = 1, tsquery = 1, line = 1,
                   lseg = 1, box = 1, path = 1, polygon = 1, circle = 1 }
    local found = {}
    for _, r in ipairs(cols) do
      if not env.scope or env.scope(r.schema, r.name) then
        local why
        if r.typtype == "e" then why = "enum"
        elseif r.typtype == "c" then why = "composite"
        elseif r.typtype == "r" or r.typtype == "m" then why = "range"
        elseif none[r.typname] then why = r.typname
        elseif r.typname == "numeric" and r.typmod < 0 then why = "numeric without precision"
        elseif r.elemtype == "e" or r.elemtype == "c" then why = "array of " .. (r.elemtype == "e" and "enum" or "composite")
        end
        if why then
          found[#found + 1] = { display = string.format("%s.%s.%s (%s)", r.schema, r.name, r.col, why) }
        end
      end
    end
    if #found == 0 then return "pass", "no column uses a type DMS converts lossily" end
    return "warn", string.format("%d column(s) use types DMS does not migrate, or only partially: %s",
      #found, list_names(found, 8)),
      "with the schema created first the column types are right, but check the values after the load "
        .. "(the validation step compares every row); consider pgtide's local runbook for these tables"
  end,
}

check {
  id = "lob_batch_apply", title = "LOB columns and batch apply",
  run = function(env)
    local n = 0
    local examples = {}
    local rows = env.src:query([[
      select distinct n.nspname as schema, c.relname as name
        from pg_attribute a join pg_class c on c.oid = a.attrelid
        join pg_namespace n on n.oid = c.relnamespace join pg_type t on t.oid = a.atttypid
       where a.attnum > 0 and not a.attisdropped and c.relkind in ('r', 'p')
         and n.nspname not in ('pg_catalog', 'information_schema') and n.nspname !~ '^pg_toast'
         and (t.typname in ('text', 'bytea', 'json', 'jsonb', 'xml', 'tsvector', 'hstore')
              or t.typcategory = 'A' or (t.typname in ('varchar', 'bpchar') and a.atttypmod < 0))
       order by 1, 2]])
    for _, r in ipairs(rows) do
      if not env.scope or env.scope(r.schema, r.name) then
        n = n + 1
        if #examples < 8 then examples[#examples + 1] = r end
      end
    end
    if n == 0 then return "pass", "no table to migrate has LOB columns" end
    return "warn", string.format("%d table(s) have LOB columns (text, jsonb, bytea, arrays...), e.g. %s: the "
      .. "seed's settings use full LOB mode with BatchApplyEnabled, so DMS applies their changes one by one",
      n, list_names(examples)),
      "expected with the seed's settings; for faster CDC use limited LOB mode (task_settings_file) if no "
        .. "value exceeds LobMaxSize"
  end,
}

check {
  id = "rls", title = "Row-level security",
  run = function(env)
    local me = env.src:query_one([[select rolsuper as super, rolbypassrls as bypass, rolname as name
                                     from pg_roles where rolname = current_user]])
    local with = {}
    for _, t in ipairs(scoped_tables(env)) do
      if t.rls and (t.force_rls or t.owner ~= me.name) then with[#with + 1] = t end
    end
    if #with == 0 then return "pass", "no row-level security applies to the source user" end
    if me.super or me.bypass then
      return "pass", string.format("%d table(s) use row-level security; %s bypasses it", #with, me.name)
    end
    return "fail", string.format("row-level security on %s: %s would copy only the rows its policies show",
      list_names(with), me.name), string.format("ALTER ROLE %s BYPASSRLS;", me.name)
  end,
}

check {
  id = "long_transactions", title = "Long-running transactions",
  run = function(env)
    local rows = env.src:query([[
      select pid, usename, state, extract(epoch from now() - xact_start)::bigint as secs,
             left(query, 60) as query
        from pg_stat_activity
       where xact_start is not null and pid <> pg_backend_pid()
         and xact_start < now() - interval '10 minutes'
       order by xact_start]])
    if #rows == 0 then return "pass", "no transaction has been open for more than 10 minutes" end
    local function show(r)
      return string.format("pid %d (%s, %s, open %s)", r.pid, tostring(r.usename), tostring(r.state),
        util.format_duration(r.secs))
    end
    return "warn", string.format("%d transaction(s) open for more than 10 minutes: %s. DMS waits for them "
      .. "(TransactionConsistencyTimeout, 600 s) before the full load", #rows, list_names(rows, nil, show)),
      "end them before starting (SELECT pg_terminate_backend(pid) after checking what they are)"
  end,
}

check {
  id = "prepared_transactions", title = "Prepared transactions",
  run = function(env)
    local rows = env.src:query("select gid, owner, prepared from pg_prepared_xacts order by prepared")
    if #rows == 0 then return "pass", "no prepared transaction is pending" end
    local function show(r) return string.format("'%s'", r.gid) end
    return "fail", string.format("%d prepared transaction(s) pending (%s): creating the replication slot "
      .. "waits for them", #rows, list_names(rows, nil, show)),
      "COMMIT PREPARED 'gid' or ROLLBACK PREPARED 'gid' for each, after checking with their owner"
  end,
}

check {
  id = "slot_wal_keep", title = "WAL retained for the replication slot",
  run = function(env)
    local v = setting(env.src, "max_slot_wal_keep_size")
    if v == nil then return "pass", "max_slot_wal_keep_size does not exist on this version (WAL is kept)" end
    if v == "-1" then
      return "pass", "max_slot_wal_keep_size is -1: the slot keeps all the WAL it needs (watch the "
        .. "source's disk while the migration runs)"
    end
    return "warn", string.format("max_slot_wal_keep_size is %s: if CDC falls that far behind, the slot "
      .. "is invalidated and the task fails", v), "raise it (or -1) for the migration, and keep CDC latency low"
  end,
}

-- {==================================================================
-- What the migration roles may do (pgtide.privileges): pgtide's own engine
-- ===================================================================

local function source_privileges(env)
  env._srcpriv = env._srcpriv or privileges.source(env.src, env.scope)
  return env._srcpriv
end

local function plan_of(env)
  env._plan = env._plan or env.plan or apply_plan.decide(env.dst, { replica_role = env.replica_role })
  return env._plan
end

check {
  id = "target_triggers", title = "Target triggers while rows are replicated", needs_target = true,
  run = function(env)
    local plan = plan_of(env)
    if plan.triggers_problem then
      return "fail", plan.triggers_problem.message, plan.triggers_problem.fix
    end
    if plan.triggers == "replica_role" then
      return "pass", string.format("the copy and apply sessions run with session_replication_role = "
        .. "replica (%s): the target's triggers do not fire for replicated rows", plan.triggers_why)
    end
    return "pass", string.format("%s: the migrated tables' user triggers are disabled while rows are "
      .. "copied or streamed and enabled again at cutover (ALTER TABLE ... DISABLE/ENABLE TRIGGER as "
      .. "their owner); foreign keys are added at cutover", plan.triggers_why)
  end,
}

check {
  id = "target_progress", title = "Where the target records the stream's position", needs_target = true,
  run = function(env)
    local plan = plan_of(env)
    if plan.progress_problem then
      return "fail", plan.progress_problem.message, plan.progress_problem.fix
    end
    -- the record this migration would use (bound to the source, database and slot): one left by
    -- an earlier attempt whose state is gone is reset when the slot is created
    local earlier
    if env.slot and not env.slot_ours then
      local record = apply_plan.record_name(env.slot, apply_plan.identity(env.src, env.slot))
      local row = plan.progress == "origin"
        and env.dst:query_one([[SELECT s.remote_lsn::text AS lsn FROM pg_replication_origin o
                                 LEFT JOIN pg_replication_origin_status s ON s.local_id = o.roident
                                 WHERE o.roname = $1]], record)
        or (env.dst:query_one("SELECT to_regclass('pgtide.cdc_progress') IS NOT NULL AS x").x
            and env.dst:query_one("SELECT lsn::text AS lsn FROM pgtide.cdc_progress WHERE name = $1", record))
      if row then earlier = string.format("%s (at %s)", record, tostring(row.lsn)) end
    end
    local how = plan.progress == "origin"
      and string.format("a replication origin (%s), committed with each applied group", plan.progress_why)
      or string.format("%s: a row in %s, committed with each applied group; validation skips the schema "
        .. "pgtide and cleanup drops what pgtide created there", plan.progress_why, apply_plan.PROGRESS_TABLE)
    if earlier then
      return "warn", string.format("%s. The progress record %s of an earlier attempt of this migration "
        .. "(same source, database and slot name) exists, and this state does not know it: it is reset "
        .. "when the slot is created, so the stream starts from the new slot", how, earlier),
        "nothing to do if that attempt is abandoned; if it still runs elsewhere, stop it first (pgtide abandon "
          .. "with its state directory)"
    end
    return "pass", how
  end,
}

-- The statement the tables' owner runs to create the publication: the
-- tables in scope but unlogged ones (partitions come with their root).
local function publication_sql(env, tables)
  local names = {}
  for _, t in ipairs(tables) do
    if not t.unlogged and not t.partition then names[#names + 1] = t.qname end
  end
  return string.format("CREATE PUBLICATION %s FOR TABLE %s;", quote.ident(env.src, env.publication),
    table.concat(names, ", "))
end

check {
  id = "target_temp", title = "Temporary objects on the target", needs_target = true,
  run = function(env)
    local t = privileges.target(env.dst)
    if t.temp then
      return "pass", "definitions the two servers print differently are compared by recreating them as "
        .. "temporary objects on the target"
    end
    return "warn", string.format("target user %s may not create temporary objects in database %s: views, "
      .. "functions, defaults and checks that the two PostgreSQL versions print differently are reported "
      .. "as differences instead of being compared", t.user, t.database),
      string.format("GRANT TEMP ON DATABASE %s TO %s;", quote.ident(env.dst, t.database), quote.ident(env.dst, t.user))
  end,
}

check {
  id = "publication", title = "Publication of the tables to stream",
  run = function(env)
    local p = source_privileges(env)
    local want = {}
    for _, t in ipairs(p.tables) do if not t.unlogged then want[#want + 1] = t end end
    if env.publication_given then
      local pub = env.src:query_one([[SELECT pubinsert AND pubupdate AND pubdelete AS dml, pubtruncate,
                                             puballtables FROM pg_publication WHERE pubname = $1]],
        env.publication)
      if not pub then
        return "fail", string.format("publication %s does not exist on the source", env.publication),
          string.format("as the tables' owner (or a superuser): %s", publication_sql(env, p.tables))
      end
      -- every plain table and partition in scope, published itself or through an ancestor
      local published = {}
      for _, r in ipairs(env.src:query([[SELECT format('%I.%I', schemaname, tablename) AS q
                                           FROM pg_publication_tables WHERE pubname = $1]], env.publication)) do
        published[r.q] = true
      end
      local missing = {}
      for _, t in ipairs(want) do
        local found = pub.puballtables or t.kind ~= "r" or published[t.qname]
        if not found and t.partition then
          for _, a in ipairs(env.src:query([[
              SELECT format('%I.%I', n.nspname, c.relname) AS q
                FROM pg_partition_ancestors($1::oid::regclass) a
                JOIN pg_class c ON c.oid = a.relid JOIN pg_namespace n ON n.oid = c.relnamespace]], t.oid)) do
            found = found or published[a.q]
          end
        end
        if not found then missing[#missing + 1] = t.qname end
      end
      if #missing > 0 then
        local names = { table.unpack(missing, 1, math.min(#missing, 10)) }
        return "fail", string.format("publication %s does not publish %d table(s) in scope: %s%s",
          env.publication, #missing, table.concat(names, ", "), #missing > 10 and ", ..." or ""),
          string.format("as the tables' owner: ALTER PUBLICATION %s ADD TABLE %s;",
            quote.ident(env.src, env.publication), table.concat(missing, ", "))
      end
      if not pub.dml or not pub.pubtruncate then
        return "fail", string.format("publication %s does not publish every kind of change (insert, "
          .. "update, delete and truncate are needed)", env.publication),
          string.format("as its owner: ALTER PUBLICATION %s SET (publish = 'insert, update, delete, "
            .. "truncate');", quote.ident(env.src, env.publication))
      end
      return "pass", string.format("publication %s publishes the %d tables in scope (given with "
        .. "publication=; pgtide leaves it in place at cleanup)", env.publication, #want)
    end
    local exists = env.src:query_one("SELECT 1 AS x FROM pg_publication WHERE pubname = $1", env.publication)
    if exists and not env.publication_ours then
      return "fail", string.format("a publication named %s already exists on the source, and this "
        .. "migration did not create it", env.publication),
        string.format("use it with publication=%s if it publishes the tables, or give this migration "
          .. "another name", env.publication)
    end
    local problems = {}
    if not p.super and not p.create_on_database then
      problems[#problems + 1] = string.format("CREATE on database %s", p.database)
    end
    if #p.not_owned > 0 then
      local owners, names = {}, {}
      for i, t in ipairs(p.not_owned) do
        owners[t.owner] = true
        if i <= 5 then names[#names + 1] = t.qname end
      end
      problems[#problems + 1] = string.format("ownership of %d table(s) (%s%s; owned by %s)", #p.not_owned,
        table.concat(names, ", "), #p.not_owned > 5 and ", ..." or "",
        table.concat(util.sorted_keys(owners), ", "))
    end
    if #problems > 0 then
      return "fail", string.format("source user %s cannot create the publication: CREATE PUBLICATION ... "
        .. "FOR TABLE needs %s", p.user, table.concat(problems, " and ")),
        string.format("ask the tables' owner to run: %s then rerun with publication=%s",
          publication_sql(env, p.tables), env.publication)
    end
    return "pass", string.format("pgtide creates publication %s for the %d tables in scope%s", env.publication,
      #want, exists and " (created by this migration)" or "")
  end,
}

check {
  id = "write_fence", title = "Write fence at cutover",
  run = function(env)
    local p = source_privileges(env)
    local missing = {}
    if not p.super and not p.owns_database then
      missing[#missing + 1] = string.format("ownership of database %s (ALTER DATABASE ... SET "
        .. "default_transaction_read_only)", p.database)
    end
    if not p.signal_backend then
      missing[#missing + 1] = "pg_signal_backend (to end the sessions that are writing)"
    end
    if #missing == 0 then
      return "pass", string.format("source user %s can make database %s read-only and end its sessions "
        .. "at cutover", p.user, p.database)
    end
    local db = quote.ident(env.src, p.database)
    return "fail", string.format("write_fence=true, but source user %s lacks %s", p.user,
      table.concat(missing, " and ")),
      string.format("either the database owner fences writes at cutover (ALTER DATABASE %s SET "
        .. "default_transaction_read_only = on; then end the application's sessions, or revoke its "
        .. "role's write privileges), or run with write_fence=false and stop the application's writes "
        .. "yourself before the cutover%s", db,
        p.signal_backend and "" or string.format("; to let pgtide do it: GRANT pg_signal_backend TO %s; "
          .. "and make %s the database's owner", quote.ident(env.src, p.user), quote.ident(env.src, p.user)))
  end,
}

check {
  id = "unlogged_tables", title = "Unlogged tables",
  run = function(env)
    local p = source_privileges(env)
    if #p.unlogged == 0 then return "pass", "no unlogged table in scope" end
    local names = {}
    for i, t in ipairs(p.unlogged) do if i <= 10 then names[#names + 1] = t.qname end end
    local list = table.concat(names, ", ") .. (#p.unlogged > 10 and ", ..." or "")
    if env.unlogged == "skip" then
      return "warn", string.format("%d unlogged table(s) are left out (unlogged=skip): %s", #p.unlogged, list),
        "create and fill them on the target yourself if the application needs their contents"
    end
    return "warn", string.format("%d unlogged table(s): %s. Logical decoding never sees their changes: "
      .. "they are copied in the full load and copied again at cutover (after the writes stop)",
      #p.unlogged, list), "unlogged=skip to leave them out, or ALTER TABLE ... SET LOGGED on the source "
      .. "to stream them"
  end,
}

check {
  id = "source_sequences", title = "Source sequences readable",
  run = function(env)
    local p = source_privileges(env)
    if #p.sequences_unreadable == 0 then
      return "pass", "the source user can read every sequence's value"
    end
    local names, schemas, seen = {}, {}, {}
    for i, q in ipairs(p.sequences_unreadable) do
      if i <= 10 then names[#names + 1] = q.qname end
      if not seen[q.schema] then seen[q.schema] = true; schemas[#schemas + 1] = q.schema end
    end
    local fixes = {}
    for _, sc in ipairs(schemas) do
      fixes[#fixes + 1] = string.format("GRANT SELECT ON ALL SEQUENCES IN SCHEMA %s TO %s;",
        quote.ident(env.src, sc), quote.ident(env.src, p.user))
    end
    return "fail", string.format("%d sequence(s) cannot be read by %s, so their values cannot be set on "
      .. "the target: %s%s", #p.sequences_unreadable, p.user, table.concat(names, ", "),
      #p.sequences_unreadable > 10 and ", ..." or ""), table.concat(fixes, " ")
  end,
}

-- }==================================================================

-- {==================================================================
-- pgtide's own engine: the tables, the slot, the tools
-- ===================================================================

-- env.slot_message(name): the runbook's words for a slot this migration did not make.
check {
  id = "slot_name", title = "Replication slot name",
  run = function(env)
    local info = require("core.cdc").slot_info { source = env.source, slot = env.slot }
    if info.exists and not env.slot_ours then
      return "fail", env.slot_message(env.slot),
        "name=NAME on the command line (the slot and publication are named pgtide_<name>)"
    end
    return "pass", string.format("slot and publication %s%s", env.slot,
      info.exists and " (created by this migration)" or " are free")
  end,
}

--[[ Tables in scope whose UPDATE/DELETE cannot be published: replica
  identity DEFAULT without a primary key, NOTHING, or USING INDEX of an
  index that is gone.  Returns the bad ones { name, why } and the names
  of those with REPLICA IDENTITY FULL. ]]
function M.replica_identity(src, scope)
  local bad, full = {}, {}
  for _, r in ipairs(src:query([[
      SELECT n.nspname AS schema, c.relname AS table, format('%I.%I', n.nspname, c.relname) AS name,
             c.relreplident::text AS ident,
             EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary) AS has_pk,
             EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisreplident) AS has_index
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
       WHERE c.relkind = 'r' AND c.relpersistence = 'p'
         AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_'
         AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                           AND d.objid = c.oid AND d.deptype = 'e')
       ORDER BY 3]])) do
    if not scope or scope(r.schema, r.table) then
      if r.ident == "f" then
        full[#full + 1] = r.name
      elseif r.ident == "n" then
        bad[#bad + 1] = { name = r.name, why = "REPLICA IDENTITY NOTHING" }
      elseif r.ident == "d" and not r.has_pk then
        bad[#bad + 1] = { name = r.name, why = "no primary key" }
      elseif r.ident == "i" and not r.has_index then
        bad[#bad + 1] = { name = r.name, why = "its replica identity index is gone" }
      end
    end
  end
  return bad, full
end

check {
  id = "replica_identity", title = "Replica identity for CDC",
  run = function(env)
    local bad, full = M.replica_identity(env.src, env.scope)
    if #bad == 0 then
      return "pass", string.format("every table has a usable replica identity%s", #full > 0 and
        string.format(" (%d with REPLICA IDENTITY FULL: their changes are applied row by row)", #full) or "")
    end
    local names, fixes = {}, {}
    for i, t in ipairs(bad) do
      if i <= 10 then
        names[#names + 1] = string.format("%s (%s)", t.name, t.why)
        fixes[#fixes + 1] = string.format("ALTER TABLE %s REPLICA IDENTITY FULL;", t.name)
      end
    end
    if #bad > 10 then names[#names + 1] = string.format("and %d more", #bad - 10) end
    return "fail", string.format("%d table(s) have no usable replica identity, so the source itself "
      .. "refuses their UPDATEs and DELETEs once they are published: %s", #bad, table.concat(names, ", ")),
      "add a primary key (ALTER TABLE t ADD PRIMARY KEY (cols)), or set REPLICA IDENTITY FULL "
        .. "(UPDATE/DELETE then carry the whole old row): " .. table.concat(fixes, " ")
  end,
}

check {
  id = "engine_keys", title = "Tables without a primary key",
  run = function(env)
    local without = {}
    for _, t in ipairs(scoped_tables(env)) do
      if t.kind == "r" and not t.has_pk then without[#without + 1] = t end
    end
    if #without == 0 then return "pass", "every table has a primary key" end
    return "warn", string.format("%d table(s): %s. They are copied (by block ranges when large), but "
      .. "their rows are compared as multisets rather than by key%s", #without, list_names(without),
      env.cdc and ", and their changes are applied row by row" or ""),
      "add a primary key where the data has one (ALTER TABLE ... ADD PRIMARY KEY (...))"
  end,
}

check {
  id = "large_objects", title = "Large objects",
  run = function(env)
    local lo = env.src:query_one("SELECT count(*) AS n FROM pg_largeobject_metadata").n
    if lo == 0 then return "pass", "no large objects" end
    return "warn", string.format("%d large object(s) on the source are not copied by the local engine", lo),
      "copy them with pg_dump --blobs-only | pg_restore, or store the data in bytea columns"
  end,
}

check {
  id = "pg_dump", title = "pg_dump",
  run = function(env)
    local ok, tools = pcall(require("pgtide.schema").find_tools, env.src:server_version(), env.pg_dump,
      env.dst and env.dst:server_version() or nil)
    if ok then return "pass", string.format("%s (version %d)", tools.pg_dump, tools.major) end
    return "fail", tostring(tools.message or tools),
      "install the PostgreSQL client of the source's major version or newer (pg_dump=PATH)"
  end,
}

check {
  id = "target_empty", title = "Target is empty", needs_target = true,
  run = function(env)
    local names = {}
    for _, t in ipairs(scoped_tables(env)) do names[#names + 1] = quote.qname(env.src, t.schema, t.name) end
    local clash = {}
    if #names > 0 then
      for _, r in ipairs(env.dst:query([[SELECT n FROM unnest($1::text[]) n
                                          WHERE to_regclass(n) IS NOT NULL LIMIT 10]], names)) do
        clash[#clash + 1] = r.n
      end
    end
    if #clash == 0 then return "pass", "none of the source's tables exists on the target yet" end
    return "fail", "tables already exist on the target: " .. table.concat(clash, ", "),
      "migrate into an empty database (DROP the tables or create a new database), or resume with the "
        .. "same --state directory"
  end,
}

--[[ connect(ctx) -> connected, results: the first checks, before any
  other can run: both connections open (ctx.src, ctx.dst), with the
  failure and its fix as a result. ]]
function M.connect(ctx)
  local results, connected = {}, true
  for _, side in ipairs { { "src", "source" }, { "dst", "target" } } do
    local ok, err = pcall(function() return ctx[side[1]] end)
    local title = "Connect to the " .. side[2]
    if ok then
      results[#results + 1] = { id = "connect_" .. side[2], title = title, status = "pass",
        message = string.format("connected (PostgreSQL %s)",
          ctx[side[1]]:query_one("SHOW server_version").server_version) }
    else
      connected = false
      results[#results + 1] = { id = "connect_" .. side[2], title = title, status = "fail",
        message = require("pgtide.errors").message(err),
        fix = "check the " .. side[2] .. " connection string, the network path and the credentials" }
    end
  end
  return connected, results
end

-- }==================================================================

--[[ One check definition run against env: { id, title, status, message,
  fix }.  A check that needs the target is skipped without one; a check
  that raises becomes a failure naming its error (it never raises). ]]
function M.run_check(id, def, env)
  local res = { id = id, title = def.title }
  if def.needs_target and not env.dst then
    res.status, res.message = "skip", "no target connection"
  else
    local ok, status, message, fix = pcall(def.run, env)
    if ok then
      res.status, res.message, res.fix = status, message, fix
    else
      res.status = "fail"
      res.message = "the check itself failed: " .. require("pgtide.errors").message(status)
      res.fix = "fix the error above (connection or permissions), then rerun"
    end
  end
  return res
end

--[[
preflight.run(opts) -> report { results = { {id, title, status, message,
fix}... }, counts = { pass =, warn =, fail = } }.  A check that raises is
reported as a failure with the error, so one broken check never hides
the others.  Checks that need the target are skipped without opts.dst.
]]
function M.run(opts)
  local env = {
    src = assert(opts.src, "preflight needs a source connection"),
    dst = opts.dst, scope = opts.scope, slot = opts.slot,
    target_disk_gb = opts.target_disk_gb, engine_version = opts.engine_version,
    -- pgtide's own engine (local runbook): see the checks of pgtide.privileges above
    replica_role = opts.replica_role, plan = opts.plan, publication = opts.publication,
    publication_given = opts.publication_given, publication_ours = opts.publication_ours,
    unlogged = opts.unlogged, slots_needed = opts.slots_needed, senders_needed = opts.senders_needed,
    source = opts.source, slot_ours = opts.slot_ours, slot_message = opts.slot_message,
    pg_dump = opts.pg_dump, cdc = opts.cdc,
  }
  local ids = opts.checks or M.DMS_RUNBOOK
  local report = M.report(opts.before or {})   -- results of checks made before (M.connect)
  for _, id in ipairs(ids) do
    local def = M.checks[id]
    if not def then error("unknown preflight check '" .. tostring(id) .. "'", 2) end
    local res = M.run_check(id, def, env)
    report.counts[res.status] = (report.counts[res.status] or 0) + 1
    report.results[#report.results + 1] = res
  end
  return report
end

-- A report of results made elsewhere (M.connect when a connection failed).
function M.report(results)
  local report = { results = {}, counts = { pass = 0, warn = 0, fail = 0, skip = 0 } }
  for _, r in ipairs(results) do
    report.results[#report.results + 1] = r
    report.counts[r.status] = (report.counts[r.status] or 0) + 1
  end
  return report
end

local marks = { pass = "pass", warn = "WARN", fail = "FAIL", skip = "skip" }

-- The report as text lines (also used by tests).
function M.lines(report)
  local out = {}
  for _, r in ipairs(report.results) do
    out[#out + 1] = string.format("[%s] %s: %s", marks[r.status] or r.status, r.title, r.message or "")
    if r.fix and r.status ~= "pass" then out[#out + 1] = "       fix: " .. r.fix end
  end
  out[#out + 1] = string.format("preflight: %d passed, %d warnings, %d failed", report.counts.pass,
    report.counts.warn, report.counts.fail)
  return out
end

-- Log the report, one line per result and fix.
function M.print(report)
  for _, line in ipairs(M.lines(report)) do
    if line:match("^%[FAIL%]") then log.error("%s", line)
    elseif line:match("^%[WARN%]") then log.warn("%s", line)
    else log.info("%s", line) end
  end
end

-- Raise a failure listing the failed checks (after they were printed).
function M.assert_ok(report)
  if report.counts.fail == 0 then return end
  local names = {}
  for _, r in ipairs(report.results) do
    if r.status == "fail" then names[#names + 1] = r.title end
  end
  runbook.fail("%d preflight check(s) failed: %s (see the fixes above)", #names, table.concat(names, "; "))
end

-- The report in a form suitable for ctx.out (plain data).
function M.summary(report)
  local out = { counts = report.counts, results = {} }
  for _, r in ipairs(report.results) do
    out.results[#out.results + 1] = { id = r.id, title = r.title, status = r.status, message = r.message }
  end
  return out
end

return M
