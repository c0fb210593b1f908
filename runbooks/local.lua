--[[
local: migrate a PostgreSQL database with pgtide's own engine, no AWS.

  pgtide run local source="host=... dbname=app" target="host=... dbname=app"

Steps (each resumable: a rerun after a failure, Ctrl-C or kill -9
continues where it stopped):
  preflight    connectivity, versions, privileges, extensions, tables
               without a primary key, disk headroom: pass / warn / fail
               with the fix for each
  schema       pg_dump of the source schema, split; the pre-data part
               (types, tables, functions, views...) applied to the target
  full-load    every table copied in parallel from one snapshot (units
               recorded as they finish; a resume skips them)
  post-data    indexes and keys in parallel (PRIMARY KEY / UNIQUE built
               as indexes then attached USING INDEX), the rest of
               post-data, foreign keys NOT VALID then VALIDATE (in
               parallel), triggers, materialized views refreshed
  sequences    every sequence set to the source's value plus a margin
  vacuum       VACUUM ANALYZE of every table, in parallel
  count-check  exact row counts compared table by table

With cdc=true (the CDC runbook half) a replication slot is created
before the full load and the load uses its snapshot; foreign keys are
then deferred to the cutover (see docs/fullload.md).
]]
local runbook = require "pgtide.runbook"
local preflight = require "pgtide.preflight"
local schema = require "pgtide.schema"
local sequences = require "pgtide.sequences"
local catalog = require "pgtide.catalog"
local util = require "pgtide.util"
local load = require "core.load"
local log = require "log"
local sys = require "sys"

local rb = runbook.new {
  name = "local",
  title = "Migrate with pgtide's own engine",
  params = {
    source = { type = "conninfo", required = true, doc = "source database" },
    target = { type = "conninfo", required = true, doc = "target database (schema created here)" },
    jobs = { type = "integer", default = 0, doc = "parallel connections (0: number of cores)" },
    cdc = { type = "boolean", default = false,
            doc = "keep the target in sync after the load (logical replication)" },
    mode = { type = "enum", values = { "post-data", "schema-first" }, default = "post-data",
             doc = "post-data: indexes and constraints after the data; schema-first: all but FKs before" },
    schemas = { type = "list", doc = "only these schemas (default: all)" },
    exclude_schemas = { type = "list", doc = "leave these schemas out" },
    split_threshold_mb = { type = "integer", default = 1024,
                           doc = "tables larger than this are copied as parallel ranges (at least "
                             .. "'jobs' ranges; smaller tables keep TRUNCATE + COPY FREEZE)" },
    max_parts = { type = "integer", default = 16, doc = "at most this many ranges per table" },
    format = { type = "enum", values = { "auto", "text" }, default = "auto",
               doc = "COPY format: binary where both servers and the column types allow it" },
    sequence_margin = { type = "integer", default = 1000,
                        doc = "sequences set to the source's value plus this" },
    maintenance_work_mem = { type = "string", default = "256MB",
                             doc = "per connection, for index builds and validation" },
    no_owner = { type = "boolean", default = true, doc = "pg_dump --no-owner" },
    no_privileges = { type = "boolean", default = true, doc = "pg_dump --no-privileges" },
    pg_dump = { type = "string", doc = "path of pg_dump (default: the newest found)" },
    target_disk_gb = { type = "number", doc = "target disk size, for the headroom check" },
    vacuum = { type = "boolean", default = true, doc = "VACUUM ANALYZE the target after the load" },
  },
}

-- {==================================================================
-- Helpers
-- ===================================================================

local function jobs(ctx)
  local j = ctx.params.jobs
  return (j and j > 0) and j or load.ncpus()
end

-- The schema filter for catalog functions and pg_dump.
local function filter(ctx)
  return { schemas = ctx.params.schemas, exclude_schemas = ctx.params.exclude_schemas }
end

-- Tables to load as "schema.table" lists (nil: all) for the planner.
local function table_scope(ctx)
  local f = filter(ctx)
  if not f.schemas and not f.exclude_schemas then return nil, nil end
  local function names(list)
    local out = {}
    for _, r in ipairs(ctx.src:query([[
        SELECT n.nspname || '.' || c.relname AS name FROM pg_class c
          JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE c.relkind IN ('r', 'p') AND n.nspname = ANY ($1::text[])]], list)) do
      out[#out + 1] = r.name
    end
    return out
  end
  return f.schemas and names(f.schemas) or nil, f.exclude_schemas and names(f.exclude_schemas) or nil
end

-- A function(schema, table) -> bool for modules taking a scope.
local function scope_fn(ctx)
  local only, skip = {}, {}
  for _, s in ipairs(ctx.params.schemas or {}) do only[s] = true end
  for _, s in ipairs(ctx.params.exclude_schemas or {}) do skip[s] = true end
  local any = next(only) ~= nil
  return function(schema_name)
    if skip[schema_name] then return false end
    return not any or only[schema_name] == true
  end
end

local function parts_of(ctx)
  local out = ctx.outputs.schema
  runbook.require(out and out.parts_file, "the schema step has not run: run it first (--from schema)")
  return schema.load(out.parts_file)
end

-- The snapshot the full load uses: nil (a fresh exported snapshot) for a
-- one-shot clone.  The CDC half replaces this with the slot's snapshot.
function rb.load_snapshot(ctx)
  local _ = ctx
  return nil
end

-- Run statements on the target in parallel; raise listing the failures.
local function parallel(ctx, what, statements, setup)
  if #statements == 0 then return { ok = 0, failed = {} } end
  log.info("%s: %d statements on %d connections", what, #statements, math.min(jobs(ctx), #statements))
  local r = load.run_parallel { target = ctx.params.target, jobs = jobs(ctx), statements = statements,
                                setup = setup, what = what,
                                settings = { maintenance_work_mem = ctx.params.maintenance_work_mem } }
  if #r.failed > 0 then
    local lines = {}
    for i, f in ipairs(r.failed) do
      if i > 10 then lines[#lines + 1] = string.format("... and %d more", #r.failed - 10); break end
      lines[#lines + 1] = string.format("%s (statement: %s)", f.message, (f.sql:gsub("%s+", " "):sub(1, 160)))
    end
    runbook.fail("%s: %d of %d statements failed:\n  %s", what, #r.failed, #statements,
      table.concat(lines, "\n  "))
  end
  log.info("%s: %d statements in %s", what, r.ok, util.format_duration(r.seconds))
  return r
end

-- Total size of each table named in 'names' (qualified, quoted) on the
-- target, to start the longest index builds first.
local function sizes(conn, names)
  local out = {}
  local list = {}
  for n in pairs(names) do list[#list + 1] = n end
  if #list == 0 then return out end
  for _, r in ipairs(conn:query([[
      SELECT n AS name, coalesce(pg_table_size(to_regclass(n)), 0)::int8 AS bytes
        FROM unnest($1::text[]) n]], list)) do
    out[r.name] = r.bytes
  end
  return out
end

--[[ The statements to run as soon as a table is loaded, while other
  tables are still being copied (as pgcopydb does): the table's index and
  key units from the schema split, then VACUUM ANALYZE.  Returns the
  'after' list for load.full_load and the session setup they need.  The
  post-data and vacuum steps skip what was done here. ]]
local function post_load_statements(ctx)
  local parts = parts_of(ctx)
  local units = ctx.outputs["full-load"].units
  local schemas, tables, seen = {}, {}, {}
  for _, u in ipairs(units) do
    local k = u.schema .. "\0" .. u.table
    if not seen[k] then
      seen[k] = true
      schemas[#schemas + 1], tables[#tables + 1] = u.schema, u.table
    end
  end
  if #tables == 0 then return nil, nil end
  -- the quoted name pg_dump's units use for each table (format %I.%I)
  local by_qname = {}
  for _, r in ipairs(ctx.src:query([[SELECT s, t, format('%I.%I', s, t) AS q
                                       FROM unnest($1::text[], $2::text[]) AS x (s, t)]], schemas, tables)) do
    by_qname[r.q] = { schema = r.s, table = r.t, statements = {}, checks = {}, groups = {} }
  end
  -- keys of a table one after the other (two ADD CONSTRAINT ... USING
  -- INDEX at once would deadlock), each other index in parallel
  for _, ix in ipairs(parts.indexes or {}) do
    local e = ix.table and by_qname[ix.table]
    if e then
      e.statements[#e.statements + 1] = ix.sql
      e.checks[#e.checks + 1] = ix.check or ""
      e.groups[#e.groups + 1] = ix.kind == "index" and #e.statements + 1 or 1
    end
  end
  local after = {}
  for q, e in pairs(by_qname) do
    if ctx.params.vacuum then e.final = "VACUUM (ANALYZE) " .. q end
    if #e.statements > 0 or e.final then after[#after + 1] = e end
  end
  local setup = (parts.session_sql or "") .. string.format("\nSELECT pg_catalog.set_config("
    .. "'maintenance_work_mem', %s, false);", ctx.dst:quote_literal(ctx.params.maintenance_work_mem))
  return after, setup
end

-- }==================================================================

rb:step {
  name = "preflight",
  title = "Check both databases before starting",
  plan = "connects to the source and the target; checks versions, privileges, extensions, "
    .. "tables without a primary key, large objects, pg_dump and disk headroom; changes nothing",
  run = function(ctx)
    local extra, status = {}, { pass = 0, warn = 0, fail = 0, skip = 0 }
    local function add(title, st, message, fix)
      extra[#extra + 1] = { id = title, title = title, status = st, message = message, fix = fix }
    end
    -- connectivity first: without it nothing else can run
    for _, side in ipairs { { "src", "source" }, { "dst", "target" } } do
      local ok, err = pcall(function() return ctx[side[1]] end)
      if ok then
        add("Connect to the " .. side[2], "pass", string.format("connected (PostgreSQL %s)",
          ctx[side[1]]:query_one("SHOW server_version").server_version))
      else
        add("Connect to the " .. side[2], "fail", tostring(err),
          "check the " .. side[2] .. " connection string, the network path and the credentials")
      end
    end
    local connected = extra[1].status == "pass" and extra[2].status == "pass"
    local report = { results = {}, counts = status }
    if connected then
      local checks = { "version", "target_version", "target_privileges", "select_privileges",
                       "extensions", "disk", "rls", "long_transactions", "prepared_transactions" }
      if ctx.params.cdc then
        for _, id in ipairs { "wal_level", "slots", "wal_senders", "replication_role" } do
          checks[#checks + 1] = id
        end
      end
      report = preflight.run { src = ctx.src, dst = ctx.dst, checks = checks,
                               scope = scope_fn(ctx), target_disk_gb = ctx.params.target_disk_gb }
      -- checks specific to the local engine
      local nopk = catalog.tables_without_pk(ctx.src, filter(ctx))
      if #nopk == 0 then
        add("Tables without a primary key", "pass", "every table has a primary key")
      else
        local names = {}
        for i, t in ipairs(nopk) do
          if i > 10 then names[#names + 1] = string.format("and %d more", #nopk - 10); break end
          names[#names + 1] = t.qname or (t.schema .. "." .. t.name)
        end
        add("Tables without a primary key", ctx.params.cdc and "fail" or "warn",
          string.format("%d table(s): %s. They are copied (by block ranges when large), but rows "
            .. "cannot be compared by key%s", #nopk, table.concat(names, ", "),
            ctx.params.cdc and ", and their UPDATEs and DELETEs cannot be replicated" or ""),
          "add a primary key (ALTER TABLE ... ADD PRIMARY KEY (...)), or ALTER TABLE ... "
            .. "REPLICA IDENTITY FULL")
      end
      local lo = ctx.src:query_one("SELECT count(*) AS n FROM pg_largeobject_metadata").n
      if lo > 0 then
        add("Large objects", "warn", string.format("%d large object(s) on the source are not copied "
          .. "by the local engine", lo), "copy them with pg_dump --blobs-only | pg_restore, or store "
          .. "the data in bytea columns")
      else
        add("Large objects", "pass", "no large objects")
      end
      local ok, err = pcall(schema.find_tools, ctx.src:server_version(), ctx.params.pg_dump)
      if ok then
        add("pg_dump", "pass", string.format("%s (version %d)", err.pg_dump, err.major))
      else
        add("pg_dump", "fail", tostring(err.message or err),
          "install the PostgreSQL client of the source's major version or newer (pg_dump=PATH)")
      end
      local clash = {}
      local names = {}
      for _, t in ipairs(catalog.tables(ctx.src, filter(ctx))) do names[#names + 1] = t.qname end
      if #names > 0 then
        for _, r in ipairs(ctx.dst:query([[SELECT n FROM unnest($1::text[]) n
                                            WHERE to_regclass(n) IS NOT NULL LIMIT 10]], names)) do
          clash[#clash + 1] = r.n
        end
      end
      if #clash == 0 then
        add("Target is empty", "pass", "none of the source's tables exists on the target yet")
      else
        add("Target is empty", "fail", "tables already exist on the target: " .. table.concat(clash, ", "),
          "migrate into an empty database (DROP the tables or create a new database), or resume "
          .. "with the same --state directory")
      end
    end
    for _, r in ipairs(extra) do
      report.results[#report.results + 1] = r
      report.counts[r.status] = (report.counts[r.status] or 0) + 1
    end
    preflight.print(report)
    ctx.out.preflight = preflight.summary(report)
    preflight.assert_ok(report)
  end,
}

rb:step {
  name = "schema",
  title = "Pre-Migration Schema Setup",
  plan = function(ctx)
    return string.format("pg_dump --schema-only of the source (%s), split; applies %s to the target "
      .. "in one transaction; verifies it name by name",
      ctx.params.no_owner and "--no-owner --no-privileges" or "with owners",
      ctx.params.mode == "schema-first" and "the whole schema except foreign keys" or "the pre-data part")
  end,
  check = function(ctx)
    return ctx.out.applied == true
  end,
  run = function(ctx)
    local dir = ctx.state_dir .. "/schema"
    local parts = schema.extract(ctx.src, {
      conninfo = ctx.params.source, dir = dir, mode = ctx.params.mode,
      schemas = ctx.params.schemas, exclude_schemas = ctx.params.exclude_schemas,
      no_owner = ctx.params.no_owner, no_privileges = ctx.params.no_privileges,
      pg_dump = ctx.params.pg_dump,
    })
    ctx.out.parts_file = dir .. "/parts.json"
    schema.save(parts, ctx.out.parts_file)
    ctx.out.counts = parts.counts
    ctx:save()
    schema.apply_pre_data(ctx.dst, parts)
    ctx.out.applied = true
  end,
  verify = function(ctx)
    local r = schema.verify(ctx.src, ctx.dst, { schemas = ctx.params.schemas,
      exclude_schemas = ctx.params.exclude_schemas,
      phase = ctx.params.mode == "schema-first" and "schema-first" or "pre-data" })
    runbook.require(r.ok, "the schema on the target differs from the source in %d place(s) "
      .. "(listed above)", #r.differences)
  end,
}

rb:step {
  name = "full-load",
  title = "Full load: copy every table in parallel",
  plan = function(ctx)
    return string.format("copies every table with %d parallel connections from one snapshot, "
      .. "largest first, tables over %d MB as parallel ranges; binary COPY where possible; each "
      .. "finished unit is recorded so a rerun continues", jobs(ctx), ctx.params.split_threshold_mb)
  end,
  check = function(ctx)
    return ctx.out.complete == true
  end,
  run = function(ctx)
    local out = ctx.out
    if not out.units then
      local only, skip = table_scope(ctx)
      out.units = load.plan { source = ctx.params.source, tables = only, exclude = skip,
                              split_threshold_bytes = ctx.params.split_threshold_mb * 1024 * 1024,
                              max_parts = ctx.params.max_parts, format = ctx.params.format,
                              jobs = jobs(ctx), target_version = ctx.dst:server_version() }
      out.done = {}
      out.started_at = ctx.dst:query_one("SELECT now()::text AS t").t
      ctx:save()
    end
    out.done = out.done or {}
    local after, after_setup = post_load_statements(ctx)
    local last_save = sys.monotonic()
    local summary = load.full_load {
      source = ctx.params.source, target = ctx.params.target, jobs = jobs(ctx),
      snapshot = rb.load_snapshot(ctx), units = out.units, done_units = out.done, progress = true,
      after = after, after_setup = after_setup,
      on_unit_done = function(u)
        out.done[#out.done + 1] = u.id
        -- a unit finished but not yet saved is redone on resume (safely)
        if sys.monotonic() - last_save >= 1 then
          ctx:save()
          last_save = sys.monotonic()
        end
      end,
      on_progress = function(p)
        -- readable by another process (pgtide status) from the state file
        out.progress = { percent = p.percent, rows = p.rows, bytes = p.bytes, mb_per_s = p.mb_per_s,
                         eta = p.eta, units = p.units, units_done = p.units_done, line = p.line }
        if sys.monotonic() - last_save >= 5 then
          ctx:save()
          last_save = sys.monotonic()
        end
      end,
      progress_interval = 2,
    }
    out.summary = { units = summary.units, loaded = summary.loaded, skipped = summary.units_skipped,
                    rows = summary.rows, bytes = summary.bytes, seconds = summary.seconds,
                    copy_seconds = summary.copy_seconds, mb_per_s = summary.mb_per_s }
    out.progress = nil
    out.complete = true
    log.info("full load: %d rows, %s copied in %s (%.1f MB/s), %d units (%d loaded before); "
      .. "with the indexes built meanwhile: %s", summary.rows, util.format_bytes(summary.bytes),
      util.format_duration(summary.copy_seconds), summary.mb_per_s, summary.units,
      summary.units_skipped, util.format_duration(summary.seconds))
  end,
}

--[[ Foreign keys referencing a partitioned table cannot take the NOT VALID
  route on PostgreSQL 15: VALIDATE CONSTRAINT marks the parent key valid
  but leaves the per-partition clones NOT VALID.  Those keys are added
  validated instead (and one left half-valid by an earlier run is
  dropped and added again).  Returns a copy of parts with the change. ]]
local function fix_partitioned_fks(ctx, parts)
  local rows = ctx.dst:query([[
    SELECT quote_ident(n.nspname) || '.' || quote_ident(t.relname) || ' ' || c.conname AS name,
           quote_ident(n.nspname) || '.' || quote_ident(t.relname) AS qtable,
           quote_ident(c.conname) AS qname,
           EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conparentid = c.oid
                     AND NOT k.convalidated) AS half_valid
      FROM pg_constraint c JOIN pg_class t ON t.oid = c.conrelid
      JOIN pg_namespace n ON n.oid = t.relnamespace
      JOIN pg_class r ON r.oid = c.confrelid
     WHERE c.contype = 'f' AND r.relkind = 'p' AND c.conparentid = 0]])
  local on_target = {}
  for _, r in ipairs(rows) do on_target[r.name] = r end
  local refs_partitioned = {}
  for _, r in ipairs(ctx.src:query([[
      SELECT quote_ident(n.nspname) || '.' || quote_ident(t.relname) || ' ' || c.conname AS name
        FROM pg_constraint c JOIN pg_class t ON t.oid = c.conrelid
        JOIN pg_namespace n ON n.oid = t.relnamespace
        JOIN pg_class r ON r.oid = c.confrelid
       WHERE c.contype = 'f' AND r.relkind = 'p' AND c.conparentid = 0]])) do
    refs_partitioned[r.name] = true
  end
  local copy = {}
  for k, v in pairs(parts) do copy[k] = v end
  copy.foreign_keys = {}
  for _, fk in ipairs(parts.foreign_keys or {}) do
    local name = fk.name
    if refs_partitioned[name] and fk.validate then
      local t = on_target[name]
      if t and t.half_valid then
        log.info("post-data: re-adding %s validated (it references a partitioned table)", name)
        ctx.dst:exec(string.format("ALTER TABLE %s DROP CONSTRAINT %s", t.qtable, t.qname))
      end
      local s, e = fk.add:find(" NOT VALID;", 1, true)
      fk = { name = fk.name, table = fk.table, check = fk.check,
             add = s and (fk.add:sub(1, s - 1) .. ";" .. fk.add:sub(e + 1)) or fk.add }
    end
    copy.foreign_keys[#copy.foreign_keys + 1] = fk
  end
  return copy
end

-- Foreign keys: added NOT VALID (cheap), then validated in parallel.
local function apply_foreign_keys(ctx, parts)
  parts = fix_partitioned_fks(ctx, parts)
  schema.apply_foreign_keys(ctx.dst, parts, { validate = false })
  local validate = {}
  for _, fk in ipairs(parts.foreign_keys) do
    if fk.validate then validate[#validate + 1] = fk.validate end
  end
  parallel(ctx, "validate foreign keys", validate, parts.session_sql)
end
rb.apply_foreign_keys = apply_foreign_keys

rb:step {
  name = "post-data",
  title = "Indexes, constraints, foreign keys and triggers",
  plan = function(ctx)
    return "builds indexes, primary and unique keys (USING INDEX) in parallel; applies the rest of "
      .. "post-data; " .. (ctx.params.cdc and "defers foreign keys to the cutover; "
        or "adds foreign keys NOT VALID then validates them in parallel; ")
      .. "creates triggers; refreshes materialized views"
  end,
  run = function(ctx)
    local parts = parts_of(ctx)
    -- indexes and keys: skip the ones an earlier run built
    local todo, tables = {}, {}
    for _, u in ipairs(parts.indexes or {}) do
      if not (u.check and ctx.dst:query_one(u.check)) then
        todo[#todo + 1] = u
        if u.table then tables[u.table] = true end
      end
    end
    local size = sizes(ctx.dst, tables)
    table.sort(todo, function(a, b)
      local x, y = size[a.table] or 0, size[b.table] or 0
      if x ~= y then return x > y end
      return a.name < b.name
    end)
    local statements = {}
    for i, u in ipairs(todo) do statements[i] = u.sql end
    parallel(ctx, "indexes and keys", statements, parts.session_sql)
    schema.apply_attach(ctx.dst, parts)
    schema.apply_rest(ctx.dst, parts)
    if not ctx.params.cdc then
      apply_foreign_keys(ctx, parts)
      ctx.out.foreign_keys = #parts.foreign_keys
    else
      ctx.out.foreign_keys_deferred = #parts.foreign_keys
      log.info("post-data: %d foreign keys deferred to the cutover", #parts.foreign_keys)
    end
    schema.apply_triggers(ctx.dst, parts)
    schema.apply_refresh(ctx.dst, parts)
  end,
  verify = function(ctx)
    local r = schema.verify(ctx.src, ctx.dst, { schemas = ctx.params.schemas,
      exclude_schemas = ctx.params.exclude_schemas,
      phase = ctx.params.cdc and "schema-first" or "all" })
    runbook.require(r.ok, "the schema on the target differs from the source in %d place(s) "
      .. "(listed above)", #r.differences)
  end,
}

rb:step {
  name = "sequences",
  title = "Post-Migration Sequence Synchronization",
  plan = function(ctx)
    return string.format("setval(seq, source value + %d) on the target for every sequence, never "
      .. "backwards, and past max() of the owning column", ctx.params.sequence_margin)
  end,
  run = function(ctx)
    local r = sequences.sync { src = ctx.src, dst = ctx.dst, margin = ctx.params.sequence_margin,
                               scope = scope_fn(ctx) }
    for _, line in ipairs(sequences.lines(r)) do log.info("%s", line) end
    ctx.out.synced, ctx.out.unchanged, ctx.out.missing = #r.synced, #r.unchanged, #r.missing
  end,
  verify = function(ctx)
    sequences.verify { src = ctx.src, dst = ctx.dst, margin = ctx.params.sequence_margin,
                       scope = scope_fn(ctx) }
  end,
}

rb:step {
  name = "vacuum",
  title = "VACUUM ANALYZE the target",
  plan = "VACUUM (ANALYZE) of every loaded table (ANALYZE of partitioned parents), in parallel, "
    .. "largest first, so the planner has statistics from the first query",
  run = function(ctx)
    if not ctx.params.vacuum then
      log.info("vacuum: skipped (vacuum=false)")
      return
    end
    local f = filter(ctx)
    -- tables vacuumed as part of the full load (after their indexes) are done
    local fl = ctx.outputs["full-load"] or {}
    local rows = ctx.dst:query([[
      SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname) AS name, c.relkind::text AS kind
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid
       WHERE c.relkind IN ('r', 'm', 'p') AND c.relpersistence <> 't'
         AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_'
         AND ($1::text[] IS NULL OR n.nspname = ANY ($1::text[]))
         AND ($2::text[] IS NULL OR NOT n.nspname = ANY ($2::text[]))
         AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                           AND d.objid = c.oid AND d.deptype = 'e')
         AND NOT ($3::timestamptz IS NOT NULL AND s.last_vacuum >= $3::timestamptz
                  AND s.last_analyze >= $3::timestamptz)
       ORDER BY pg_table_size(c.oid) DESC, 1]], f.schemas, f.exclude_schemas, fl.started_at)
    local statements = {}
    for _, r in ipairs(rows) do
      statements[#statements + 1] = (r.kind == "p" and "ANALYZE " or "VACUUM (ANALYZE) ") .. r.name
    end
    if #statements == 0 then log.info("vacuum: every table was vacuumed during the full load") end
    parallel(ctx, "vacuum", statements)
    ctx.out.tables = #statements
  end,
}

rb:step {
  name = "count-check",
  title = "Verify Data Migration: row counts",
  plan = "counts the rows of every loaded table on both sides and compares them exactly",
  run = function(ctx)
    local fl = ctx.outputs["full-load"]
    runbook.require(fl and fl.units, "the full-load step has not run")
    local seen, list = {}, {}
    for _, u in ipairs(fl.units) do
      local k = u.schema .. "." .. u.table
      if not seen[k] then
        seen[k] = true
        list[#list + 1] = u
      end
    end
    table.sort(list, function(a, b) return a.schema .. "." .. a.table < b.schema .. "." .. b.table end)
    -- one query per batch of tables, run on both servers at once
    local diffs, total = {}, 0
    for first = 1, #list, 100 do
      local cols = {}
      for i = first, math.min(first + 99, #list) do
        local u = list[i]
        cols[#cols + 1] = string.format("(SELECT count(*) FROM ONLY %s.%s) AS c%d",
          ctx.src:quote_ident(u.schema), ctx.src:quote_ident(u.table), i)
      end
      local sql = "SELECT " .. table.concat(cols, ", ")
      ctx.src:send(sql)
      local ok, b = pcall(ctx.dst.query_one, ctx.dst, sql)
      local rows = ctx.src:wait()
      if not ok then error(b, 0) end
      local a = rows[1]
      for i = first, math.min(first + 99, #list) do
        local u, k = list[i], "c" .. i
        total = total + a[k]
        if a[k] ~= b[k] then
          diffs[#diffs + 1] = string.format("%s.%s: source %d, target %d", u.schema, u.table, a[k], b[k])
          log.error("count differs: %s", diffs[#diffs])
        end
      end
    end
    ctx.out.tables, ctx.out.rows, ctx.out.differences = #list, total, #diffs
    runbook.require(#diffs == 0, "row counts differ in %d table(s): %s", #diffs,
      table.concat(diffs, "; "))
    log.info("count check: %d tables, %d rows, all equal", #list, total)
  end,
}

return rb
