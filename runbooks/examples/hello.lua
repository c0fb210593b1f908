--[[
hello: a small example runbook, and a template for your own.

It copies one database to another with pg_dump and psql, then compares
row counts.  Run it with:

  pgtide run runbooks/examples/hello.lua source="host=... dbname=app" target="host=... dbname=app"

Each step has a name (used by --from/--only and the state file), a
title, and run; check makes a step skippable when already done, verify
checks its result.  See docs/runbooks.md.
]]
local runbook = require "pgtide.runbook"
local util = require "pgtide.util"
local log = require "log"

local rb = runbook.new {
  name = "hello",
  title = "Copy a small database with pg_dump and psql",
  params = {
    source = { type = "conninfo", required = true, doc = "source database" },
    target = { type = "conninfo", required = true, doc = "target database" },
  },
}

-- Run a shell command, raising with its output when it fails.
local function sh(cmd)
  local p = io.popen(cmd .. " 2>&1")
  local out = p:read("a")
  local ok, _, code = p:close()
  runbook.require(ok, "command failed (exit %s): %s", tostring(code), out)
  return out
end

local function psql(conninfo, sql)
  return util.trim(sh(string.format("psql %s -X -A -t -q -v ON_ERROR_STOP=1 -c %s",
    util.shell_quote(conninfo), util.shell_quote(sql))))
end

local count_sql = [[
  select coalesce(string_agg(format('%s.%s=%s', schemaname, relname, n_live_tup), ' '
         order by schemaname, relname), '') from pg_stat_user_tables]]

rb:step {
  name = "connect",
  title = "Check both databases are reachable",
  plan = "runs 'select version()' on the source and the target",
  run = function(ctx)
    log.info("source: %s", psql(ctx.params.source, "select version()"))
    log.info("target: %s", psql(ctx.params.target, "select version()"))
  end,
}

rb:step {
  name = "copy",
  title = "Copy schema and data",
  plan = "pg_dump --no-owner --no-privileges from the source, piped into psql on the target",
  check = function(ctx)
    return psql(ctx.params.target,
      "select count(*) from pg_tables where schemaname not in ('pg_catalog', 'information_schema')") ~= "0"
  end,
  run = function(ctx)
    sh(string.format("pg_dump --no-owner --no-privileges %s | psql -X -q -v ON_ERROR_STOP=1 %s",
      util.shell_quote(ctx.params.source), util.shell_quote(ctx.params.target)))
  end,
}

rb:step {
  name = "counts",
  title = "Compare row counts",
  run = function(ctx)
    for _, c in ipairs({ ctx.params.source, ctx.params.target }) do psql(c, "analyze") end
    local a, b = psql(ctx.params.source, count_sql), psql(ctx.params.target, count_sql)
    runbook.require(a == b, "row counts differ:\n  source %s\n  target %s", a, b)
    ctx.out.counts = a
    log.info("row counts match: %s", a)
  end,
}

return rb
