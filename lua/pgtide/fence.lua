--[[
pgtide.fence: the write fence of the local runbook's cutover
(write_fence=true): the source database becomes read-only for new
sessions and its other client sessions are ended.

  local f = fence.apply(ctx)        --> { database, terminated, at, at_unix }
  fence.unfence_sql(conn, db)       --> the statement that lifts it
Needs the database's owner (or superuser) and pg_signal_backend:
preflight's write_fence check says so before anything is created.
]]
local log = require "log"
local sys = require "sys"
local util = require "pgtide.util"

local M = {}

-- The statement that lifts the fence on database 'db'.
function M.unfence_sql(conn, db)
  return string.format("ALTER DATABASE %s RESET default_transaction_read_only", conn:quote_ident(db))
end

--[[
apply(ctx) -> { database, terminated, at, at_unix }.  Stops writes on the source
database for the cutover: new sessions become read-only (ALTER
DATABASE ... SET default_transaction_read_only = on), then every other
client session on that database is terminated, so applications
reconnect read-only; their open transactions roll back and were never
replicated.  This run's own session and walsenders are left alone.
Needs the database's owner (or superuser) and pg_signal_backend.
]]
function M.apply(ctx)
  local src = ctx.src
  local db = src:query_one("SELECT current_database() AS d").d
  -- a rerun after a crash here opens its session read-only: fencing again must still write
  src:exec("SET default_transaction_read_only = off")
  src:exec(string.format("ALTER DATABASE %s SET default_transaction_read_only = on", src:quote_ident(db)))
  -- every other client session, pgtide's included (the CDC worker's monitor session
  -- reconnects by itself; its replication connection is a walsender, left alone)
  local rows = src:query([[
    SELECT pid, usename, application_name, pg_terminate_backend(pid) AS terminated
      FROM pg_stat_activity
     WHERE datname = current_database() AND pid <> pg_backend_pid()
       AND backend_type = 'client backend']])
  local n = 0
  for _, r in ipairs(rows) do
    if r.terminated then n = n + 1 end
    log.info("fence: ended session pid %d (%s, %s)", r.pid, tostring(r.usename),
      tostring(r.application_name))
  end
  log.warn("fence: database %s on the source is read-only for new sessions; %d session(s) ended. "
    .. "Lift it with: %s", db, n, M.unfence_sql(src, db))
  return { database = db, terminated = n, at = util.now_iso(), at_unix = sys.time() }
end

return M
