--[[
pgtide.cutover: the switch from the source to the target, done so that
nothing written on the source is left behind.

The seed's cutover is "stop application writes; wait for CDC to catch
up (monitor lag in DMS console); verify final data consistency; update
connection strings; stop the DMS task".  A lag figure alone can read 0
while an open transaction or an idle stream hides work, so pgtide also
writes a sentinel row on the source after writes stopped and waits until
that very row is on the target: everything committed before it has then
been applied (replication applies in commit order).

  cutover.ensure_sentinel(conn, schema)      -- the sentinel table (before the data is copied)
  cutover.sentinel_table(schema)             -- its qualified name
  cutover.sentinel_ddl(schema)               -- the CREATE TABLE (for an owner to run)
  cutover.run(ctx, opts)                     -- the whole cutover, see below
  cutover.instructions(opts)                 -- the switch-over instructions (lines)
]]
local log = require "log"
local sys = require "sys"
local util = require "pgtide.util"
local runbook = require "pgtide.runbook"

local M = {}

M.TABLE = "_pgtide_cutover"

function M.sentinel_table(schema)
  return require("pgtide.quote").name(schema) .. "." .. M.TABLE
end

-- The sentinel's CREATE TABLE.  It has a primary key so every
-- replication method (DMS included) applies its rows and can validate it.
function M.sentinel_ddl(schema)
  return string.format("CREATE TABLE %s (token text PRIMARY KEY, phase text NOT NULL, "
    .. "written_at timestamptz NOT NULL DEFAULT clock_timestamp())", M.sentinel_table(schema))
end

--[[
cutover.ensure_sentinel(conn, schema) -> true when it created the table.
Creates the sentinel table on 'conn' if missing.  An existing one (made
by the schema's owner for a role without CREATE on the schema) is used
as it is: CREATE TABLE IF NOT EXISTS would still need that privilege.
Raises the database error when the table cannot be created.
]]
function M.ensure_sentinel(conn, schema)
  local q = M.sentinel_table(schema)
  if conn:query_one("select to_regclass($1) is not null as e", q).e then return false end
  conn:exec(M.sentinel_ddl(schema))
  return true
end

-- Sessions on the source that hold a transaction id (they wrote) and are
-- not pgtide's or a replication connection.
local function writers(src)
  return src:query([[
    select pid, usename, application_name, state, coalesce(client_addr::text, 'local') as client,
           extract(epoch from now() - xact_start)::bigint as secs
      from pg_stat_activity
     where pid <> pg_backend_pid() and backend_xid is not null
       and backend_type = 'client backend'
       and coalesce(application_name, '') not like 'pgtide%'
     order by xact_start]])
end

--[[
cutover.wait_caught_up(opts) -> { latency, waited }.  Writes a sentinel
row on opts.src and waits until it is on opts.dst and opts.latency()
(seconds, or nil when unknown) is under opts.threshold.  An unknown
latency counts as caught up only when opts.require_latency is false.
Bounded by opts.timeout; the failure names the last latency and whether
the sentinel had arrived.
]]
function M.wait_caught_up(opts)
  local schema = opts.schema or "public"
  local tbl = M.sentinel_table(schema)
  local token = string.format("%s-%d-%s", opts.name or "cutover", os.time(), util.random_hex())
  opts.src:exec(string.format("insert into %s (token, phase) values ($1, 'cutover')", tbl), token)
  log.info("sentinel row '%s' written to %s on the source", token, tbl)
  local t0 = sys.monotonic()
  local arrived, lat, note = false, nil, nil
  local deadline = t0 + opts.timeout
  while true do
    if not arrived then
      arrived = opts.dst:query_one(string.format("select 1 as ok from %s where token = $1", tbl), token) ~= nil
      if arrived then log.info("sentinel arrived on the target after %s", util.format_duration(sys.monotonic() - t0)) end
    end
    if opts.latency then lat, note = opts.latency() end
    local lat_ok
    if lat == nil then lat_ok = not opts.require_latency else lat_ok = lat < opts.threshold end
    local status = string.format("CDC latency %s; sentinel %s", lat and (tostring(lat) .. " s") or
      ("unknown" .. (note and (" (" .. note .. ")") or "")), arrived and "on the target" or "not yet on the target")
    if arrived and lat_ok then
      if lat == nil then
        log.warn("no CDC latency figure is available; the sentinel row proves the target has caught up")
      else
        log.info("caught up: the sentinel is on the target and CDC latency is %s s (threshold %s s)",
          tostring(lat), tostring(opts.threshold))
      end
      return { latency = lat, waited = sys.monotonic() - t0, token = token }
    end
    if sys.monotonic() >= deadline then
      runbook.fail("timed out after %s waiting for CDC to catch up (threshold %s s); last status: %s",
        util.format_duration(sys.monotonic() - t0), tostring(opts.threshold), status)
    end
    if log.is_tty() then log.status("cutover: " .. status) end
    if sys.sleep(math.min(opts.interval or 2, math.max(0.05, deadline - sys.monotonic()))) == false then
      log.status(nil)
      error(require("pgtide.errors").new { message = "interrupted", interrupted = true }, 0)
    end
  end
end

--[[
cutover.instructions(opts) -> lines: what to do now (the seed's "Update
application connection strings to point to PlanetScale", "Start
application with new connections"), with the target's connection
details (never its password).
]]
function M.instructions(opts)
  local lines = {
    "Cutover is safe now: the target has every change written on the source before writes stopped.",
    "  1. Update the application's connection strings to the target, " .. M.target_place(opts.target_display)
      .. ", with the application's own role and password (not the migration's login)",
    "  2. Start the application with the new connections; test inserts (sequences are ahead of the source).",
    "  3. Keep the source read-only until you are satisfied; it is no longer replicated after this step.",
  }
  if opts.next then lines[#lines + 1] = "  4. " .. opts.next end
  return lines
end

--[[
target_place(conninfo) -> "host=... port=... dbname=..." (or the URI's
host, port and database): where the target is, without the user and
password the migration connected with, which the application must not
take over.
]]
function M.target_place(conninfo)
  conninfo = tostring(conninfo or "")
  local parts = {}
  local uri_host, uri_rest = conninfo:match("^%a[%w+.-]*://([^/?]*)(.*)$")
  if uri_host then
    local host = uri_host:gsub("^.*@", "")
    local db = uri_rest:match("^/([^?]+)")
    parts[#parts + 1] = "host " .. host
    if db then parts[#parts + 1] = "database " .. db end
    return table.concat(parts, ", ")
  end
  for _, key in ipairs { "host", "hostaddr", "port", "dbname", "sslmode" } do
    local v = conninfo:match("%f[%w]" .. key .. "%s*=%s*'([^']*)'") or conninfo:match("%f[%w]" .. key .. "%s*=%s*(%S+)")
    if v then parts[#parts + 1] = key .. "=" .. v end
  end
  return #parts > 0 and table.concat(parts, " ") or "(see the target connection string)"
end

--[[
cutover.run(ctx, opts): the cutover.
  opts.src, opts.dst       connections
  opts.schema              schema of the sentinel table
  opts.latency()           -> current CDC latency in seconds (or nil, note)
  opts.threshold           seconds (default 5)
  opts.require_latency     wait for a latency figure (else the sentinel suffices)
  opts.timeout             seconds to wait for catch-up
  opts.validate()          final data validation; raises on differences
  opts.sequences()         final sequence sync (writes are stopped now)
  opts.stop()              stops replication (the DMS task)
  opts.catch_up            false: nothing replicates (a full load copied a
                           snapshot after writes stopped): no sentinel wait
  opts.target_display      target connection shown in the instructions
Results go to ctx.out (sentinel, latency, waited).  Raises when the
user does not confirm that writes are stopped.
]]
function M.run(ctx, opts)
  if not ctx.out.writes_stopped_confirmed then
    local ok = ctx:confirm("Have all application writes to the source stopped (maintenance mode on)?")
    runbook.require(ok, "cutover needs application writes to the source to be stopped: stop them, then "
      .. "rerun (answer yes on a terminal, or pass --yes)")
    ctx.out.writes_stopped_confirmed = true
    ctx:save()
  end
  local w = writers(opts.src)
  for _, r in ipairs(w) do
    log.warn("source session pid %d (%s, %s from %s, %s) has an open write transaction (%s): it must end "
      .. "before the switch", r.pid, tostring(r.usename), tostring(r.application_name), r.client,
      tostring(r.state), util.format_duration(r.secs or 0))
  end
  if not ctx.out.caught_up and opts.catch_up ~= false then
    local res = M.wait_caught_up {
      src = opts.src, dst = opts.dst, schema = opts.schema, latency = opts.latency,
      threshold = opts.threshold or 5, timeout = opts.timeout, interval = opts.interval,
      name = ctx.name, require_latency = opts.require_latency,
    }
    ctx.out.sentinel, ctx.out.latency, ctx.out.waited = res.token, res.latency, res.waited
    ctx.out.caught_up = true
    ctx:save()
  end
  if opts.validate and not ctx.out.validated then
    log.info("final validation (writes are stopped, so the comparison is exact)")
    opts.validate()
    ctx.out.validated = true
    ctx:save()
  end
  if opts.sequences and not ctx.out.sequences_synced then
    opts.sequences()
    ctx.out.sequences_synced = true
    ctx:save()
  end
  for _, l in ipairs(M.instructions(opts)) do log.info("%s", l) end
  if opts.stop and not ctx.out.replication_stopped then
    opts.stop()
    ctx.out.replication_stopped = true
    ctx:save()
  end
end

return M
