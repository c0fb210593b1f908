-- pgtide.schema: copy a database's schema with pg_dump, split so the
-- expensive parts run after the data is loaded, apply, and verify.
--
--   local parts = schema.extract(src, { conninfo = ..., dir = ... })
--   schema.apply_pre_data(dst, parts)       -- before the load
--   ... load the data (core engine) ...
--   schema.apply_post_data(dst, parts)      -- or piece by piece, below
--   local report = schema.verify(src, dst)  -- report.ok, report.differences
--
-- How the split works: pg_dump writes a custom-format archive of the
-- pre-data and post-data sections (the schema, materialized view refresh
-- included, no table data).  pg_restore's own section selection
-- (--section, -l) says which entry is which, and pg_restore -L turns
-- entries back into SQL.  Post-data entries are classified by their
-- archive type (INDEX, CONSTRAINT, FK CONSTRAINT, TRIGGER...) and
-- matched to the source catalog by OID, read in the same snapshot as
-- the dump.  No SQL text is parsed: the only rewrites (PRIMARY KEY /
-- UNIQUE built as CREATE UNIQUE INDEX + ADD CONSTRAINT ... USING INDEX,
-- foreign keys added NOT VALID then validated) replace a statement only
-- when it is exactly the text pg_dump generates for that constraint,
-- and keep pg_dump's statement otherwise.
--
-- parts (plain data, JSON-serialisable with schema.save/schema.load):
--   mode           "post-data" (default) or "schema-first"
--   session_sql    settings pg_dump's scripts expect; apply_* run it first
--   pre_data       one SQL script (schema-first: the whole schema minus
--                  foreign keys and materialized view data)
--   indexes        units { name, kind, table, sql, check } that may run in
--                  parallel, each in its own transaction; 'check' is a
--                  query returning a row when the unit is already done
--   attach         statements attaching partition indexes (after indexes)
--   post_data      the rest of post-data (policies, RLS, rules, NOT VALID
--                  checks, comments on indexes...), in dump order
--   foreign_keys   { name, table, add, validate, check }: add creates the
--                  key NOT VALID (when possible), validate checks the rows
--   triggers       { name, table, sql, check }
--   refresh        { name, sql }: REFRESH MATERIALIZED VIEW, dump order
-- In schema-first mode indexes/attach/post_data/triggers are empty (they
-- are in pre_data); foreign_keys and refresh are kept for later.
local pg = require "pg"
local sys = require "sys"
local log = require "log"
local json = require "json"
local errors = require "pgtide.errors"
local catalog = require "pgtide.catalog"
local schema_align = require "pgtide.schema_align"
local util = require "pgtide.util"

local M = {}

local function fail(fmt, ...)
  error(errors.new { message = string.format(fmt, ...) }, 0)
end

local shq = util.shell_quote

local lit = require("pgtide.quote").literal

-- {==================================================================
-- Client tools
-- ===================================================================

-- Run a shell command with a time limit (in the foreground process
-- group, so Ctrl-C reaches it too); stderr goes to a file whose
-- (redacted) text is returned.  -> ok, stderr_text
local function run_tool(cmd, errfile, timeout)
  local full = string.format("timeout --foreground --kill-after=10 %d %s 2>%s", timeout or 3600, cmd, shq(errfile))
  local ok, how, code = os.execute(full)
  local err = sys.readfile(errfile) or ""
  os.remove(errfile)
  err = sys.redact(err):gsub("%s+$", "")
  if not ok and how == "exit" and code == 124 then
    err = string.format("timed out after %d s. %s", timeout or 3600, err)
  end
  return ok, err
end

-- The major version of a client tool ("pg_dump (PostgreSQL) 15.18" -> 15).
local function tool_major(path)
  local p = io.popen(shq(path) .. " --version 2>/dev/null")
  if not p then return nil end
  local out = p:read("a") or ""
  p:close()
  local major = out:match("%(PostgreSQL%)%s+(%d+)")
  return tonumber(major), out:gsub("%s+$", "")
end

--[[ find_tools(server_version, pg_dump_path?, target_version?) ->
  { pg_dump, pg_restore, major }.  pg_dump refuses to dump a server newer
  than itself, so the tools must be at least the source's major version;
  and pg_dump writes for its own version (pg_dump 17 sets
  transaction_timeout, which PostgreSQL 16 and older refuse), so among
  those, the newest that is not newer than the target's major version is
  preferred, else the newest.  A path given explicitly is the only
  candidate.  Otherwise: pg_dump on PATH, then /usr/lib/postgresql/*/bin.
  Debian's pg_wrapper on PATH is skipped for the versioned binaries it
  would pick itself: it is a Perl script, and the schema step runs the
  tools half a dozen times.  pg_restore is taken beside pg_dump and must
  be the same version.  Raises an error naming the version to install
  and the pg_dump=PATH parameter. ]]
function M.find_tools(server_version, explicit, target_version)
  local need = server_version // 10000
  local target = target_version and target_version // 10000
  local candidates = {}
  if explicit then
    candidates[1] = explicit
  else
    local on_path
    for dir in (os.getenv("PATH") or ""):gmatch("[^:]+") do
      if sys.exists(dir .. "/pg_dump") then on_path = dir .. "/pg_dump"; break end
    end
    local real = on_path and sys.realpath(on_path)
    if on_path and not (real and real:match("/pg_wrapper$")) then candidates[1] = on_path end
    local p = io.popen("ls -d /usr/lib/postgresql/*/bin/pg_dump 2>/dev/null")
    local found = {}
    for line in p:lines() do found[#found + 1] = line end
    p:close()
    table.sort(found, function(a, b)
      return (tonumber(a:match("/(%d+)/bin/")) or 0) > (tonumber(b:match("/(%d+)/bin/")) or 0)
    end)
    for _, f in ipairs(found) do
      if f ~= real then candidates[#candidates + 1] = f end
    end
  end
  local seen, best = {}, nil
  local function better(major, than)
    if not than then return true end
    local fits, fitted = target and major <= target, target and than.major <= target
    if fits ~= fitted then return fits end
    return major > than.major
  end
  for _, path in ipairs(candidates) do
    local major = tool_major(path)
    if major then
      seen[#seen + 1] = string.format("%s is version %d", path, major)
      if major >= need and better(major, best) then
        local dir = path:match("^(.*)/[^/]*$")
        best = { pg_dump = path, pg_restore = dir and (dir .. "/pg_restore") or "pg_restore",
                 major = major }
      end
    else
      seen[#seen + 1] = path .. " not found"
    end
  end
  if best then
    local rmajor = tool_major(best.pg_restore)
    if rmajor ~= best.major then
      fail("%s is version %d but %s beside it %s: install the complete PostgreSQL %d client tools " ..
           "(Debian/Ubuntu: apt-get install postgresql-client-%d)", best.pg_dump, best.major,
           best.pg_restore, rmajor and ("is version " .. rmajor) or "is missing", best.major, best.major)
    end
    return best
  end
  local install = (target and target > need) and target or need
  if #seen == 0 then seen[1] = "no pg_dump was found" end
  local shown = server_version >= 100000
    and string.format("%d.%d", need, server_version % 10000)
    or string.format("%d.%d.%d", need, server_version // 100 % 100, server_version % 100)
  fail("pg_dump %d or newer is needed to dump the source (PostgreSQL %s), but %s. Install the " ..
       "PostgreSQL %d client tools (Debian/Ubuntu: apt-get install postgresql-client-%d; when the " ..
       "release does not have that package, add the PostgreSQL APT repository first: " ..
       "https://wiki.postgresql.org/wiki/Apt), or give the path of a pg_dump %d or newer with " ..
       "pg_dump=PATH (e.g. pg_dump=/usr/lib/postgresql/%d/bin/pg_dump)",
       need, shown, table.concat(seen, ", "), install, install, need, install)
end

-- The pg_dump/pg_restore connection arguments for 'conninfo': the
-- password, if any, goes to a private pgpass file (never on a command
-- line or in a log).  -> args (shell words), env prefix, cleanup()
local function tool_connection(conninfo, dir)
  local rest, password = pg.split_password(conninfo)
  local env, file = "", nil
  if password then
    file = string.format("%s/.pgpass-%d-%d", dir, sys.getpid(), math.random(1e9))
    local esc = password:gsub("\\", "\\\\"):gsub(":", "\\:")
    assert(sys.write_atomic(file, "*:*:*:*:" .. esc .. "\n", 384))  -- 0600
    env = "env PGPASSFILE=" .. shq(file) .. " "
  end
  return "-d " .. shq(rest), env, function() if file then os.remove(file) end end
end

-- }==================================================================


-- {==================================================================
-- Archive listing (pg_restore -l)
-- ===================================================================

-- Entry types that span several words, longest first.
local DESCS = {
  "PUBLICATION TABLES IN SCHEMA", "TEXT SEARCH CONFIGURATION", "TEXT SEARCH DICTIONARY",
  "MATERIALIZED VIEW DATA", "FOREIGN DATA WRAPPER", "TEXT SEARCH TEMPLATE",
  "TEXT SEARCH PARSER", "PROCEDURAL LANGUAGE", "DATABASE PROPERTIES", "PUBLICATION TABLE",
  "SEQUENCE OWNED BY", "MATERIALIZED VIEW", "OPERATOR FAMILY", "OPERATOR CLASS",
  "CHECK CONSTRAINT", "FOREIGN SERVER", "SECURITY LABEL", "ACCESS METHOD", "EVENT TRIGGER",
  "FK CONSTRAINT", "FOREIGN TABLE", "INDEX ATTACH", "LARGE OBJECT", "SEQUENCE SET",
  "TABLE ATTACH", "USER MAPPING", "ROW SECURITY", "DEFAULT ACL", "SHELL TYPE", "TABLE DATA",
  "BLOB METADATA",
}

--[[ Parse one line of `pg_restore -l`: "ID; TABLEOID OID DESC SCHEMA TAG
  OWNER".  The schema is "-" when there is none.  Tags may contain spaces
  (and are only used for messages); the type and OID are exact. ]]
local function parse_toc_line(line)
  local id, catoid, oid, rest = line:match("^(%d+);%s+(%d+)%s+(%d+)%s+(.*)$")
  if not id then return nil end
  local desc
  for _, d in ipairs(DESCS) do
    if rest:sub(1, #d + 1) == d .. " " then desc = d; break end
  end
  desc = desc or rest:match("^(%S+)")
  local tail = rest:sub(#desc + 2)
  local schema, middle = tail:match("^(%S+)%s(.*)$")
  local tag = middle and (middle:match("^(.*)%s%S*$") or middle) or tail
  return { id = tonumber(id), catalog_oid = tonumber(catoid), oid = tonumber(oid), desc = desc,
           schema = schema ~= "-" and schema or nil, tag = tag, line = line }
end

local function list_entries(tools, dump, section, dir)
  local cmd = string.format("%s -l %s %s", shq(tools.pg_restore),
                            section and ("--section=" .. section) or "", shq(dump))
  local p = io.popen(cmd .. " 2>" .. shq(dir .. "/pg_restore-l.err"))
  local entries = {}
  for line in p:lines() do
    if not line:find("^;") and line:find("%S") then
      local e = parse_toc_line(line)
      if not e then fail("cannot read pg_restore's listing line %q", line) end
      entries[#entries + 1] = e
    end
  end
  local ok = p:close()
  local err = sys.readfile(dir .. "/pg_restore-l.err") or ""
  os.remove(dir .. "/pg_restore-l.err")
  if not ok then fail("pg_restore -l failed: %s", sys.redact(err)) end
  return entries
end

-- pg_restore the listed entries (in this order) to SQL text.
local function restore_sql(tools, dump, entries, opts, dir, name)
  local listfile = string.format("%s/%s.list", dir, name)
  local lines = {}
  for _, e in ipairs(entries) do lines[#lines + 1] = e.line end
  assert(sys.write_atomic(listfile, table.concat(lines, "\n") .. "\n", 420))
  local out = string.format("%s/%s.sql", dir, name)
  local args = { "-L", shq(listfile), "-f", shq(out) }
  if opts.no_owner ~= false then args[#args + 1] = "--no-owner" end
  if opts.no_privileges ~= false then args[#args + 1] = "--no-privileges" end
  if opts.no_tablespaces ~= false then args[#args + 1] = "--no-tablespaces" end
  if opts.no_comments then args[#args + 1] = "--no-comments" end
  local ok, err = run_tool(string.format("%s %s %s", shq(tools.pg_restore), table.concat(args, " "),
                                         shq(dump)), dir .. "/pg_restore.err", opts.timeout)
  if not ok then fail("pg_restore failed: %s", err) end
  return assert(sys.readfile(out))
end

-- }==================================================================


-- {==================================================================
-- Splitting pg_restore's SQL into entries
-- ===================================================================

local HEADER = "\n--\n-- Name: "

--[[ Split a pg_restore script into its preamble (session settings) and
  one chunk per entry, using the "-- Name: ...; Type: ...;" comment that
  pg_restore writes before every entry.  Returns preamble, chunks (each
  { type, sql }), or nil when the script does not have that shape. ]]
local function split_script(text)
  local starts = {}
  local pos = 1
  while true do
    local s = text:find(HEADER, pos, true)
    if not s then break end
    starts[#starts + 1] = s + 1
    pos = s + #HEADER
  end
  if #starts == 0 then return nil end
  local preamble = text:sub(1, starts[1] - 1)
  local chunks = {}
  for i, s in ipairs(starts) do
    local e = (starts[i + 1] or (#text + 2)) - 1
    local sql = text:sub(s, e)
    local ty = sql:match("^%-%-\n%-%- Name: [^\n]-; Type: ([^\n]-); Schema: ")
    chunks[#chunks + 1] = { type = ty, sql = sql }
  end
  -- the trailer after the last entry is not part of it
  local last = chunks[#chunks]
  local t = last.sql:find("\n--\n-- PostgreSQL database dump complete", 1, true)
  if t then last.sql = last.sql:sub(1, t) end
  -- a "SET default_tablespace/_access_method" pg_restore writes before an
  -- entry's header belongs to that entry, not to the previous one
  for i = 1, #chunks - 1 do
    local moved = {}
    while true do
      local body, line = chunks[i].sql:match("^(.*\n)(SET default_table[%w_]* = [^\n]*;)\n+$")
      if not body then break end
      table.insert(moved, 1, line)
      chunks[i].sql = body
    end
    if #moved > 0 then
      chunks[i + 1].sql = table.concat(moved, "\n") .. "\n\n" .. chunks[i + 1].sql
    end
  end
  return preamble, chunks
end

-- Remove psql-only lines (\restrict / \unrestrict, added by recent
-- pg_dump releases) so the text can run through libpq.
local function strip_psql(text)
  local key = text:match("\n\\restrict (%S+)\n") or text:match("^\\restrict (%S+)\n")
  if not key then return text end
  text = text:gsub("\\restrict " .. key:gsub("%p", "%%%0") .. "\n", "", 1)
  text = text:gsub("\\unrestrict " .. key:gsub("%p", "%%%0") .. "\n?", "", 1)
  return text
end

-- The session settings of a preamble, without comments and blank lines.
local function settings_of(preamble)
  local out = {}
  for line in (strip_psql(preamble) .. "\n"):gmatch("([^\n]*)\n") do
    if line:find("^SET ") or line:find("^SELECT pg_catalog.set_config") then out[#out + 1] = line end
  end
  return table.concat(out, "\n") .. "\n"
end

-- Settings a newer pg_dump writes that older servers refuse, and the
-- server version that has them.
local NEWER_SETTINGS = { transaction_timeout = 170000 }

-- Session settings without the "SET name = ..." lines whose parameter
-- known(name) says the target does not have.
local function known_settings(sql, known)
  local out = {}
  for line in (sql .. "\n"):gmatch("([^\n]*)\n") do
    local name = line:match("^SET ([%w_]+) ")
    if line ~= "" and (not name or known(name)) then out[#out + 1] = line end
  end
  return #out > 0 and (table.concat(out, "\n") .. "\n") or ""
end

-- }==================================================================


-- {==================================================================
-- Source catalog facts for post-data entries (by OID)
-- ===================================================================

local function objects_by_oid(conn, entries)
  local con_oids, idx_oids, trg_oids = {}, {}, {}
  for _, e in ipairs(entries) do
    if e.desc == "CONSTRAINT" or e.desc == "FK CONSTRAINT" then con_oids[#con_oids + 1] = e.oid
    elseif e.desc == "INDEX" then idx_oids[#idx_oids + 1] = e.oid
    elseif e.desc == "TRIGGER" then trg_oids[#trg_oids + 1] = e.oid end
  end
  local out = { constraints = {}, indexes = {}, triggers = {} }
  local old = conn:query_one("SELECT pg_catalog.current_setting('search_path') AS p").p
  -- pg_dump runs with an empty search_path: get definitions the same way
  conn:exec("SELECT pg_catalog.set_config('search_path', '', false)")
  local ok, err = pcall(function()
    for _, r in ipairs(conn:query([[
      SELECT con.oid::int8 AS oid, con.contype::text AS contype,
             pg_catalog.quote_ident(con.conname) AS qname, con.conname AS name,
             pg_catalog.format('%I.%I', n.nspname, c.relname) AS qtable, c.relkind::text AS relkind,
             rc.relkind::text AS ref_relkind,
             con.condeferrable AS deferrable, con.condeferred AS deferred,
             pg_catalog.pg_get_constraintdef(con.oid) AS def,
             pg_catalog.quote_ident(ic.relname) AS index_name,
             CASE WHEN con.conindid <> 0 THEN pg_catalog.pg_get_indexdef(con.conindid) END AS indexdef
        FROM pg_catalog.pg_constraint con
        JOIN pg_catalog.pg_class c ON c.oid = con.conrelid
        JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
        LEFT JOIN pg_catalog.pg_class ic ON ic.oid = con.conindid
        LEFT JOIN pg_catalog.pg_class rc ON rc.oid = con.confrelid
       WHERE con.oid = ANY ($1::pg_catalog.oid[])]], con_oids)) do
      out.constraints[r.oid] = r
    end
    for _, r in ipairs(conn:query([[
      SELECT c.oid::int8 AS oid, pg_catalog.format('%I.%I', n.nspname, c.relname) AS qname,
             pg_catalog.format('%I.%I', tn.nspname, t.relname) AS qtable
        FROM pg_catalog.pg_class c
        JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
        JOIN pg_catalog.pg_index x ON x.indexrelid = c.oid
        JOIN pg_catalog.pg_class t ON t.oid = x.indrelid
        JOIN pg_catalog.pg_namespace tn ON tn.oid = t.relnamespace
       WHERE c.oid = ANY ($1::pg_catalog.oid[])]], idx_oids)) do
      out.indexes[r.oid] = r
    end
    for _, r in ipairs(conn:query([[
      SELECT t.oid::int8 AS oid, t.tgname AS name,
             pg_catalog.format('%I.%I', n.nspname, c.relname) AS qtable
        FROM pg_catalog.pg_trigger t
        JOIN pg_catalog.pg_class c ON c.oid = t.tgrelid
        JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
       WHERE t.oid = ANY ($1::pg_catalog.oid[])]], trg_oids)) do
      out.triggers[r.oid] = r
    end
  end)
  pcall(conn.exec, conn, "SELECT pg_catalog.set_config('search_path', $1, false)", old)
  if not ok then error(err, 0) end
  return out
end

local function constraint_exists(qtable, name)
  return string.format([[SELECT 1 FROM pg_catalog.pg_constraint
     WHERE conrelid = pg_catalog.to_regclass(%s) AND conname = %s]], lit(qtable), lit(name))
end

-- Replace the exact text 'old' in 'sql' by 'new' (no patterns); nil when
-- 'old' is not there.
local function replace_exact(sql, old, new)
  local s, e = sql:find(old, 1, true)
  if not s then return nil end
  return sql:sub(1, s - 1) .. new .. sql:sub(e + 1)
end

-- A PRIMARY KEY / UNIQUE entry as a unit: CREATE UNIQUE INDEX, then ADD
-- CONSTRAINT ... USING INDEX (so the index build can run in parallel with
-- others), when pg_dump's statement is the plain form; otherwise pg_dump's.
local function key_unit(chunk, c)
  local kind = c.contype == "p" and "primary key" or (c.contype == "u" and "unique" or "exclusion")
  local unit = { name = c.qtable .. " " .. c.name, kind = kind, table = c.qtable, sql = chunk,
                 check = constraint_exists(c.qtable, c.name) }
  if (c.contype == "p" or c.contype == "u") and c.relkind == "r" and c.indexdef then
    local dumped = string.format("ALTER TABLE ONLY %s\n    ADD CONSTRAINT %s %s;\n",
                                 c.qtable, c.qname, c.def)
    local using = string.format("%s;\n\nALTER TABLE ONLY %s\n    ADD CONSTRAINT %s %s USING INDEX %s%s;\n",
      c.indexdef, c.qtable, c.qname, c.contype == "p" and "PRIMARY KEY" or "UNIQUE", c.index_name,
      c.deferrable and (c.deferred and " DEFERRABLE INITIALLY DEFERRED" or " DEFERRABLE") or "")
    local sql = replace_exact(chunk, dumped, using)
    if sql then
      unit.sql, unit.using_index = sql, true
    else
      log.debug("schema: keeping pg_dump's statement for %s", unit.name)
    end
  end
  return unit
end

-- A foreign key entry: added NOT VALID (then validated) when pg_dump's
-- statement is the plain form and the table is not partitioned (NOT
-- VALID is not supported there); a key that is NOT VALID on the source
-- stays so and is not validated.
local function fk_entry(chunk, c)
  local fk = { name = c.qtable .. " " .. c.name, table = c.qtable, add = chunk,
               check = constraint_exists(c.qtable, c.name) }
  local already_not_valid = c.def:sub(-10) == " NOT VALID"
  -- A key referencing a partitioned table is added valid: on PostgreSQL 15,
  -- VALIDATE CONSTRAINT leaves the clones on the referenced partitions
  -- NOT VALID.
  if c.relkind == "r" and c.ref_relkind ~= "p" and not already_not_valid then
    local dumped = string.format("ALTER TABLE ONLY %s\n    ADD CONSTRAINT %s %s;\n",
                                 c.qtable, c.qname, c.def)
    local sql = replace_exact(chunk, dumped, string.format(
      "ALTER TABLE ONLY %s\n    ADD CONSTRAINT %s %s NOT VALID;\n", c.qtable, c.qname, c.def))
    if sql then
      fk.add = sql
      fk.validate = string.format("ALTER TABLE %s VALIDATE CONSTRAINT %s;", c.qtable, c.qname)
    end
  end
  return fk
end

-- }==================================================================


-- {==================================================================
-- Extraction
-- ===================================================================

-- Dump the schema (pre-data and post-data) into opts.dir/schema.dump in
-- one snapshot with our catalog reads: the given snapshot, the source
-- connection's transaction, or one exported here.  Returns the post-data
-- entries and the catalog objects they name (objects_by_oid).  Raises.
local function dump_schema(src, tools, dump, opts)
  local own_tx = src:status() == "idle"
  local snapshot = opts.snapshot
  if own_tx then
    src:exec("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
    if snapshot then
      src:exec("SET TRANSACTION SNAPSHOT " .. lit(snapshot))
    else
      snapshot = src:query_one("SELECT pg_catalog.pg_export_snapshot() AS s").s
    end
  end
  local ok, res = pcall(function()
    -- publications and subscriptions belong to the source's replication, never to the target
    local args = { "-Fc", "--section=pre-data", "--section=post-data", "--no-blobs",
                   "--no-publications", "--no-subscriptions", "-f", shq(dump) }
    if snapshot then args[#args + 1] = "--snapshot=" .. shq(snapshot) end
    for _, s in ipairs(opts.schemas or {}) do args[#args + 1] = "-n " .. shq(s) end
    for _, s in ipairs(opts.exclude_schemas or {}) do args[#args + 1] = "-N " .. shq(s) end
    for _, a in ipairs(opts.extra_args or {}) do args[#args + 1] = shq(a) end
    local conn_args, env, cleanup = tool_connection(opts.conninfo, opts.dir)
    log.info("schema: dumping the source schema with %s (version %d)", tools.pg_dump, tools.major)
    local done, err = run_tool(string.format("%s%s %s %s", env, shq(tools.pg_dump), conn_args,
                                             table.concat(args, " ")),
                               opts.dir .. "/pg_dump.err", opts.timeout)
    cleanup()
    if not done then fail("pg_dump failed: %s", err) end
    local post = list_entries(tools, dump, "post-data", opts.dir)
    return { post = post, objects = objects_by_oid(src, post) }
  end)
  if own_tx then pcall(src.exec, src, "COMMIT") end
  if not ok then error(res, 0) end
  return res
end

-- The SQL of each post-data entry (chunks[i] for post[i]) and the
-- script's preamble (session settings): one pg_restore run split at its
-- entry headers, or, when the script does not split as expected, one
-- run per entry.
local function post_chunks(tools, dump, post, opts)
  if #post == 0 then return "", {} end
  local preamble, chunks = split_script(restore_sql(tools, dump, post, opts, opts.dir, "post-data"))
  local fits = chunks and #chunks == #post
  for i = 1, fits and #chunks or 0 do
    if chunks[i].type ~= post[i].desc then fits = false end
  end
  if not fits then
    log.debug("schema: restoring post-data entries one by one")
    chunks = {}
    for i, e in ipairs(post) do
      local p, c = split_script(restore_sql(tools, dump, { e }, opts, opts.dir, "entry"))
      preamble = p or preamble
      chunks[i] = c and c[1] or { type = e.desc, sql = "" }
    end
  end
  return preamble, chunks
end

-- Sort post-data entries into the parts: foreign keys, materialized view
-- refreshes, indexes and key constraints, partition index attaches,
-- triggers, the rest.  In schema-first mode everything but foreign keys
-- and refreshes is returned, to go with pre-data.
local function classify_post(parts, post, chunks, objects, mode)
  local schema_first_post = {}
  for i, e in ipairs(post) do
    local sql = strip_psql(chunks[i].sql)
    local con = objects.constraints[e.oid]
    if e.desc == "FK CONSTRAINT" and con then
      parts.foreign_keys[#parts.foreign_keys + 1] = fk_entry(sql, con)
    elseif e.desc == "MATERIALIZED VIEW DATA" then
      parts.refresh[#parts.refresh + 1] = { name = (e.schema or "") .. "." .. e.tag, sql = sql }
    elseif mode == "schema-first" then
      schema_first_post[#schema_first_post + 1] = e
    elseif e.desc == "INDEX" and objects.indexes[e.oid] then
      local ix = objects.indexes[e.oid]
      parts.indexes[#parts.indexes + 1] = { name = ix.qname, kind = "index", table = ix.qtable,
        sql = sql, check = string.format("SELECT 1 WHERE pg_catalog.to_regclass(%s) IS NOT NULL",
                                         lit(ix.qname)) }
    elseif e.desc == "CONSTRAINT" and con and (con.contype == "p" or con.contype == "u"
                                               or con.contype == "x") then
      parts.indexes[#parts.indexes + 1] = key_unit(sql, con)
    elseif e.desc == "INDEX ATTACH" then
      parts.attach[#parts.attach + 1] = sql
    elseif (e.desc == "TRIGGER" and objects.triggers[e.oid]) then
      local t = objects.triggers[e.oid]
      parts.triggers[#parts.triggers + 1] = { name = t.qtable .. " " .. t.name, table = t.qtable,
        sql = sql, check = string.format([[SELECT 1 FROM pg_catalog.pg_trigger
           WHERE tgrelid = pg_catalog.to_regclass(%s) AND tgname = %s]], lit(t.qtable), lit(t.name)) }
    elseif e.desc == "EVENT TRIGGER" then
      parts.triggers[#parts.triggers + 1] = { name = e.tag, sql = sql }
    else
      parts.post_data[#parts.post_data + 1] = sql
    end
  end
  return schema_first_post
end

-- The pre-data script of the entries 'list' (dump order), without
-- pg_restore's header and trailer; also returns the header as the
-- preamble when 'preamble' is still empty.
local function pre_data_script(tools, dump, list, opts, preamble)
  if #list == 0 then return "", preamble end
  local text = strip_psql(restore_sql(tools, dump, list, opts, opts.dir, "pre-data"))
  local p = text:find(HEADER, 1, true)
  if p then
    if preamble == "" then preamble = text:sub(1, p) end
    text = text:sub(p + 1)
  end
  local t = text:find("\n--\n-- PostgreSQL database dump complete", 1, true)
  text = t and text:sub(1, t) or text
  -- pg_dump -n emits CREATE SCHEMA even for schemas every database has
  -- (public): create schemas only when missing.
  text = ("\n" .. text):gsub("\nCREATE SCHEMA ([^;\n]+);", "\nCREATE SCHEMA IF NOT EXISTS %1;"):sub(2)
  return text, preamble
end

--[[ extract(src, opts) -> parts.  'src' is an open pg connection to the
  source (read in the dump's snapshot).  opts:
    conninfo        the source conninfo for pg_dump (required)
    dir             working directory for the archive and scripts (required)
    mode            "post-data" (default) | "schema-first"
    no_owner, no_privileges, no_tablespaces   (default true), no_comments (false)
    schemas, exclude_schemas   lists (pg_dump -n / -N)
    snapshot        an exported snapshot to dump (else one is exported here)
    pg_dump         path of pg_dump (pg_restore is taken beside it)
    target_version  the target's server_version: the tools are chosen for
                    it (find_tools) and session_sql leaves out settings
                    it does not have
    timeout         seconds for each tool run (default 3600)
  Raises on failure (tool errors are shown redacted). ]]
function M.extract(src, opts)
  opts = opts or {}
  assert(opts.conninfo, "schema.extract: conninfo is required")
  assert(opts.dir, "schema.extract: dir is required")
  local mode = opts.mode or "post-data"
  if mode ~= "post-data" and mode ~= "schema-first" then
    fail("unknown schema mode %q (post-data or schema-first)", tostring(mode))
  end
  assert(sys.mkdir_p(opts.dir))
  local server_version = src:server_version()
  local tools = M.find_tools(server_version, opts.pg_dump, opts.target_version)
  local dump = opts.dir .. "/schema.dump"
  local res = dump_schema(src, tools, dump, opts)

  -- the entries to restore, by section (entries in no section, e.g. ACLs
  -- of post-data objects, are kept at the end of post-data)
  local all = {}
  for _, e in ipairs(list_entries(tools, dump, nil, opts.dir)) do
    -- entries pg_restore would skip anyway under the options
    local skip = (opts.no_privileges ~= false and (e.desc == "ACL" or e.desc == "DEFAULT ACL"))
              or (opts.no_comments and e.desc == "COMMENT")
    if not skip then all[#all + 1] = e end
  end
  local pre_ids = {}
  for _, e in ipairs(list_entries(tools, dump, "pre-data", opts.dir)) do pre_ids[e.id] = true end
  local post_ids = {}
  for _, e in ipairs(res.post) do post_ids[e.id] = true end
  local pre, post = {}, {}
  for _, e in ipairs(all) do
    if post_ids[e.id] or not pre_ids[e.id] then post[#post + 1] = e end
    if pre_ids[e.id] then pre[#pre + 1] = e end
  end

  local parts = { mode = mode, server_version = server_version, pg_dump_version = tools.major,
                  dump_file = dump, indexes = {}, attach = {}, post_data = {}, foreign_keys = {},
                  triggers = {}, refresh = {} }
  local preamble, chunks = post_chunks(tools, dump, post, opts)
  local schema_first_post = classify_post(parts, post, chunks, res.objects, mode)

  -- pre-data (schema-first: plus post-data except foreign keys and
  -- materialized view data), as one script in dump order
  local pre_list = pre
  if mode == "schema-first" then
    pre_list = {}
    for _, e in ipairs(pre) do pre_list[#pre_list + 1] = e end
    for _, e in ipairs(schema_first_post) do pre_list[#pre_list + 1] = e end
  end
  parts.pre_data, preamble = pre_data_script(tools, dump, pre_list, opts, preamble)
  parts.session_sql = settings_of(preamble or "")
  if opts.target_version then
    parts.session_sql = known_settings(parts.session_sql, function(name)
      return (NEWER_SETTINGS[name] or 0) <= opts.target_version
    end)
  end
  parts.counts = { pre_data = #pre_list, indexes = #parts.indexes, attach = #parts.attach,
                   post_data = #parts.post_data, foreign_keys = #parts.foreign_keys,
                   triggers = #parts.triggers, refresh = #parts.refresh }
  log.info("schema: %d pre-data entries, %d index units, %d foreign keys, %d triggers, " ..
           "%d other post-data entries, %d materialized views to refresh",
           #pre_list, #parts.indexes, #parts.foreign_keys, #parts.triggers, #parts.post_data,
           #parts.refresh)
  return parts
end

-- Persist / reload parts (plain JSON).
function M.save(parts, path)
  assert(sys.write_atomic(path, json.encode(parts), 384))
end

function M.load(path)
  local text = sys.readfile(path)
  if not text then fail("cannot read schema parts %s", path) end
  return util.plain(json.decode(text))
end

-- }==================================================================


-- {==================================================================
-- Applying
-- ===================================================================

-- Settings that pg_dump's scripts change (restored after applying).
local SESSION_GUCS = { "statement_timeout", "lock_timeout", "idle_in_transaction_session_timeout",
  "transaction_timeout",
  "client_encoding", "standard_conforming_strings", "search_path", "check_function_bodies",
  "xmloption", "client_min_messages", "row_security", "default_tablespace",
  "default_table_access_method" }

--[[ with_session(conn, parts, fn): run fn() with pg_dump's session
  settings on 'conn' (those the server has: a newer pg_dump sets
  parameters older servers refuse), then restore the connection's own
  values (the connection may be a runbook's shared ctx.dst). ]]
local function with_session(conn, parts, fn)
  local saved = {}
  for _, g in ipairs(SESSION_GUCS) do
    saved[g] = conn:query_one("SELECT pg_catalog.current_setting($1, true) AS v", g).v
  end
  local names = {}
  known_settings(parts.session_sql or "", function(name) names[#names + 1] = name end)
  local has = {}
  for _, r in ipairs(conn:query("SELECT name FROM pg_catalog.pg_settings WHERE name = ANY ($1::text[])",
                                names)) do
    has[r.name] = true
  end
  local sql = known_settings(parts.session_sql or "", function(name) return has[name] end)
  if sql ~= "" then conn:exec(sql) end
  local ok, err = pcall(fn)
  for _, g in ipairs(SESSION_GUCS) do
    if saved[g] then
      pcall(conn.exec, conn, "SELECT pg_catalog.set_config($1, $2, false)", g, saved[g])
    end
  end
  if not ok then error(err, 0) end
end
M.with_session = with_session

-- The "-- Name: ...; Type: ..." header of the entry holding byte 'pos'.
local function entry_at(sql, pos)
  local best
  local from = 1
  while true do
    local s, e, name, ty = sql:find("%-%- Name: ([^\n]-); Type: ([^;\n]+);", from)
    if not s or s > pos then break end
    best = ty .. " " .. name
    from = e + 1
  end
  return best
end

-- Run a script; a failure names the dump entry it happened in.
local function exec_script(conn, sql, what)
  local ok, err = pcall(conn.exec, conn, sql)
  if ok then return end
  if pg.is_error(err) then
    local where = err.position and entry_at(sql, err.position)
    err.message = string.format("%s%s: %s", what, where and (" (" .. where .. ")") or "", err.message)
  end
  error(err, 0)
end

local function exists(conn, check)
  return check ~= nil and conn:query_one(check) ~= nil
end

-- "TYPE schema.name" from an entry's "-- Name: ...; Type: ...; Schema:" header.
local function entry_name(sql)
  local name, ty, sch = sql:match("%-%- Name: ([^\n]-); Type: ([^;\n]+); Schema: ([^;\n]+);")
  if not name then return nil end
  return ty .. " " .. (sch ~= "-" and (sch .. ".") or "") .. name
end

--[[ apply_pre_data(dst, parts): the pre-data script in one transaction
  (all or nothing; a rerun after a failure starts clean).  Entries run one
  by one inside it, so an error names the entry ("pre-data (TABLE
  app.orders): ..."). ]]
function M.apply_pre_data(dst, parts)
  local n = parts.counts and parts.counts.pre_data or 0
  log.info("schema: applying pre-data (%d entries)", n)
  with_session(dst, parts, function()
    local _, chunks = split_script("\n" .. parts.pre_data)
    if not chunks or #chunks ~= n then  -- unexpected shape: one script
      exec_script(dst, parts.pre_data, "pre-data")
      return
    end
    dst:transaction(function()
      for _, ch in ipairs(chunks) do
        exec_script(dst, ch.sql, "pre-data (" .. (entry_name(ch.sql) or ch.type or "?") .. ")")
      end
    end)
  end)
end

-- index_units(parts) -> the index units, for a parallel executor.  Each
-- worker runs parts.session_sql once, then per unit: skip when
-- conn:query_one(unit.check) returns a row, else conn:exec(unit.sql).
function M.index_units(parts)
  return parts.indexes
end

-- Run one unit (index, key, trigger) unless its check says it is done.
-- -> true when it ran, false when skipped.
function M.run_unit(conn, unit)
  if exists(conn, unit.check) then return false end
  exec_script(conn, unit.sql, unit.name)
  return true
end

--[[ apply_indexes(dst, parts [, opts]): every index unit, one after the
  other (the core engine runs them in parallel instead), then the
  partition index attachments.  Units already present are skipped, so a
  rerun resumes.  opts.on_unit(unit, index, total) is called before
  each. ]]
function M.apply_indexes(dst, parts, opts)
  opts = opts or {}
  with_session(dst, parts, function()
    for i, u in ipairs(parts.indexes) do
      if opts.on_unit then opts.on_unit(u, i, #parts.indexes) end
      M.run_unit(dst, u)
    end
    M.apply_attach(dst, parts, true)
  end)
end

-- apply_attach(dst, parts): ALTER INDEX ... ATTACH PARTITION statements.
function M.apply_attach(dst, parts, in_session)
  local function go()
    for _, sql in ipairs(parts.attach) do
      -- attaching twice is refused only when attached elsewhere: skip
      -- indexes that already have a parent
      exec_script(dst, sql, "index attach")
    end
  end
  if in_session then go() else with_session(dst, parts, go) end
end

-- SQLSTATEs meaning "it is already there" (42710 duplicate_object,
-- 42P07 duplicate_table).
local ALREADY = { ["42710"] = true, ["42P07"] = true }

-- Run an entry that has no existence check; on a rerun, "already exists"
-- means an earlier run applied it.
local function exec_once(conn, sql, what)
  local ok, err = pcall(exec_script, conn, sql, what)
  if ok then return true end
  if pg.is_error(err) and ALREADY[err.sqlstate] then
    log.warn("schema: %s already exists on the target, skipped", what)
    return false
  end
  error(err, 0)
end

-- apply_rest(dst, parts): the other post-data entries (policies, RLS,
-- rules, NOT VALID checks, comments...), each in its own transaction, in
-- dump order; entries already applied by an earlier run are skipped.
function M.apply_rest(dst, parts)
  if #parts.post_data == 0 then return end
  with_session(dst, parts, function()
    for _, sql in ipairs(parts.post_data) do
      exec_once(dst, sql, entry_name(sql) or "post-data")
    end
  end)
end

--[[ apply_foreign_keys(dst, parts [, opts]): add every foreign key (NOT
  VALID where possible), then validate them unless opts.validate ==
  false.  Keys already present are not added again; validation is
  idempotent. ]]
function M.apply_foreign_keys(dst, parts, opts)
  opts = opts or {}
  with_session(dst, parts, function()
    for _, fk in ipairs(parts.foreign_keys) do
      if not exists(dst, fk.check) then exec_script(dst, fk.add, fk.name) end
    end
    if opts.validate ~= false then M.validate_foreign_keys(dst, parts, true) end
  end)
end

-- validate_foreign_keys(dst, parts): VALIDATE CONSTRAINT for each key added NOT VALID.
function M.validate_foreign_keys(dst, parts, in_session)
  local function go()
    for _, fk in ipairs(parts.foreign_keys) do
      if fk.validate then
        log.info("schema: validating %s", fk.name)
        exec_script(dst, fk.validate, fk.name)
      end
    end
  end
  if in_session then go() else with_session(dst, parts, go) end
end

-- apply_triggers(dst, parts): create the triggers (skipping existing ones).
function M.apply_triggers(dst, parts)
  with_session(dst, parts, function()
    for _, t in ipairs(parts.triggers) do
      if t.check then M.run_unit(dst, t) else exec_once(dst, t.sql, t.name) end
    end
  end)
end

-- apply_refresh(dst, parts): refresh materialized views (after the data).
function M.apply_refresh(dst, parts)
  with_session(dst, parts, function()
    for _, r in ipairs(parts.refresh) do exec_script(dst, r.sql, r.name) end
  end)
end

--[[ apply_post_data(dst, parts [, opts]): everything after the data, in
  a safe order: indexes and keys, partition index attachments, the rest
  of post-data, foreign keys (NOT VALID, then VALIDATE), triggers,
  materialized view refresh.  opts as apply_indexes / apply_foreign_keys. ]]
function M.apply_post_data(dst, parts, opts)
  M.apply_indexes(dst, parts, opts)
  M.apply_rest(dst, parts)
  M.apply_foreign_keys(dst, parts, opts)
  M.apply_triggers(dst, parts)
  M.apply_refresh(dst, parts)
end

-- }==================================================================


-- {==================================================================
-- Verification
-- ===================================================================

local PRE_DATA_KINDS = { "schemas", "extensions", "types", "tables", "sequences", "views",
                         "functions" }

--[[ deferred_views(parts) -> set of "schema.name": views whose definition
  pg_dump moved to post-data (a view that needs a primary key or unique
  index, say for GROUP BY on the key; also views in a dependency loop).
  Pre-data holds a placeholder view with the right columns, and post-data
  a "_RETURN" RULE entry with CREATE OR REPLACE VIEW. ]]
function M.deferred_views(parts)
  local out = {}
  for _, sql in ipairs(parts.post_data or {}) do
    local name, schema = sql:match("%-%- Name: (%S+) _RETURN; Type: RULE; Schema: ([^;]+);")
    if name then out[schema .. "." .. name] = true end
  end
  return out
end

--[[ verify(src, dst [, opts]) -> { ok, differences, counts = { source,
  target }, aligned }.  Runs the seed's counts query (tables, sequences,
  indexes per schema) on both sides and compares the catalogs name by
  name (catalog.compare: tables and columns, sequences, indexes,
  constraints, views, functions, types, triggers, policies,
  extensions), definitions as the target's server prints them
  (pgtide.schema_align recreates on the target, in a transaction rolled
  back at once, the source definitions whose text differs).  opts: schemas / exclude_schemas (filter), phase =
  "all" (default) | "pre-data" (only what pre-data creates) |
  "schema-first" (all but foreign keys), kinds (explicit list),
  ignore_objects (patterns, see schema_diff.ignored: left out on both
  sides, and out of the counts). ]]
function M.verify(src, dst, opts)
  opts = opts or {}
  local filter = { schemas = opts.schemas, exclude_schemas = opts.exclude_schemas }
  local phase = opts.phase or "all"
  local a = catalog.describe(src, filter)
  local b = catalog.describe(dst, filter)
  local gone_a, gone_b = {}, {}
  if opts.ignore_objects and #opts.ignore_objects > 0 then
    local schema_diff = require "pgtide.schema_diff"
    a, gone_a = schema_diff.without(a, opts.ignore_objects)
    b, gone_b = schema_diff.without(b, opts.ignore_objects)
  end
  local aligned = schema_align.align(src, dst, a, b)
  for _, n in ipairs(aligned.notes) do log.info("schema: %s", n) end
  if aligned.deparsed > 0 then
    log.info("schema: %d definition(s) printed differently by the two servers were recreated on the "
      .. "target to compare them (%d could not be)", aligned.deparsed, aligned.failed)
  end
  local kinds = opts.kinds or (phase == "pre-data" and PRE_DATA_KINDS) or nil
  local ignore = phase == "pre-data"
    and { tables = { rls_enabled = true, rls_forced = true, replica_identity_index = true } } or {}
  -- triggers pgtide keeps disabled while rows are replicated (pgtide.triggers)
  if opts.triggers_disabled then ignore.triggers = { enabled = true } end
  local diffs = catalog.compare(a, b, { kinds = kinds, ignore = ignore })
  if phase == "pre-data" and opts.deferred_views then
    -- placeholders until post-data defines them (see deferred_views)
    local kept = {}
    for _, d in ipairs(diffs) do
      if not (d.kind == "views" and d.field == "definition" and opts.deferred_views[d.name]) then
        kept[#kept + 1] = d
      end
    end
    diffs = kept
  end
  if phase == "schema-first" then  -- foreign keys come later in that mode
    local fks = {}
    for _, c in ipairs(a.constraints) do
      if c.type == "foreign key" then fks[c.schema .. "." .. c.table .. "." .. c.name] = true end
    end
    local kept = {}
    for _, d in ipairs(diffs) do
      if not (d.kind == "constraints" and fks[d.name]) then kept[#kept + 1] = d end
    end
    diffs = kept
  end
  local ca, cb = catalog.counts(src, filter), catalog.counts(dst, filter)
  for _, pair in ipairs({ { ca, gone_a }, { cb, gone_b } }) do
    for _, c in ipairs(pair[1]) do
      local g = pair[2][c.schema]
      if g then
        c.tables, c.sequences, c.indexes = c.tables - g.tables, c.sequences - g.sequences, c.indexes - g.indexes
      end
    end
  end
  local fields = phase == "pre-data" and { "tables", "sequences" } or { "tables", "sequences", "indexes" }
  local bschema = {}
  for _, c in ipairs(cb) do bschema[c.schema] = c end
  for _, c in ipairs(ca) do
    local o = bschema[c.schema]
    for _, f in ipairs(fields) do
      if o and c[f] ~= o[f] then
        diffs[#diffs + 1] = { kind = "counts", name = c.schema, problem = "different", field = f,
                              source = c[f], target = o[f] }
      end
    end
  end
  if not opts.quiet then
    for _, d in ipairs(diffs) do log.warn("schema difference: %s", catalog.format_difference(d)) end
  end
  return { ok = #diffs == 0, differences = diffs, counts = { source = ca, target = cb },
           aligned = aligned }
end

-- }==================================================================

return M
