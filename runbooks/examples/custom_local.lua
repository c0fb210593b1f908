--[[
custom_local: customising a shipped runbook.

This runbook is the stock `local` runbook with three changes: a step that
announces the copy before the full load, the VACUUM ANALYZE step replaced
by a plain ANALYZE (for very large databases, where autovacuum can freeze
later), and a larger sequence margin by default.
Run it like any runbook:

  pgtide steps runbooks/examples/custom_local.lua
  pgtide run runbooks/examples/custom_local.lua -c migration.lua

See docs/runbooks.md, "Customising a shipped runbook".
]]
local log = require "log"
local rb = require("runbooks.local"):clone("custom-local")

rb:insert_before("full-load", {
  name = "announce",
  title = "Announce the start of the copy",
  plan = "logs a line (replace with your own notification)",
  run = function(ctx)
    log.info("migration %s: starting the full load into %s", ctx.name,
      require("pg").safe_conninfo(ctx.params.target))
  end,
})

rb:replace("vacuum", {
  title = "ANALYZE the target (autovacuum does the rest later)",
  plan = "ANALYZE of the whole target database: statistics now, VACUUM left to autovacuum",
  run = function(ctx)
    ctx.dst:exec("ANALYZE")
  end,
})

rb:param("sequence_margin", { type = "integer", default = 10000,
  doc = "added to each source sequence value on the target" })

return rb
