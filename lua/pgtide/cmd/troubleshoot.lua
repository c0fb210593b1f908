-- pgtide troubleshoot TOPIC [-c CONFIG] [source=... target=...] [--schemas a,b]
--                          [--object NAME] [--strict]
-- The seeds' troubleshooting section as tools (pgtide.troubleshoot).
local config = require "pgtide.config"
local errors = require "pgtide.errors"
local util = require "pgtide.util"

local M = {
  summary = "diagnose schema problems (sequences, indexes, foreign keys, dependencies, permissions)",
  usage = [[
pgtide troubleshoot TOPIC [-c CONFIG] [source=CONNINFO] [target=CONNINFO]
                          [name=NAME] [publication=NAME] [replica_role=auto|true|false]
                          [--schemas a,b] [--object NAME] [--strict]

Topics:
  missing-sequences   sequences the target lacks ("sequence does not exist")
  sequences-behind    sequences behind max(id) or the source (duplicate keys)
  missing-indexes     indexes on the source missing or invalid on the target
  fk-violations       target rows that violate the source's foreign keys
  dependency-order    create order of functions and views, with their DDL
  permissions         privilege problems: schema application, DMS and pgtide's
                      engine (the local runbook's preflight checks)

Each topic prints what it found and the SQL that fixes it; nothing is
changed.  --schemas limits the check (default: every user schema;
permissions: public).  --object NAME shows one object's dependencies.
Exit code 0; with --strict, 1 when something was found.]],
}

function M.run(args)
  local topic, cfg, o = nil, {}, {}
  local i = 1
  while i <= #args do
    local a = args[i]
    if a == "-c" or a == "--config" then
      if not args[i + 1] then errors.usage("-c needs a file") end
      cfg = config.load(args[i + 1]); i = i + 2
    elseif a == "--schemas" then
      if not args[i + 1] then errors.usage("--schemas needs a list") end
      o.schemas = util.split(args[i + 1], ","); i = i + 2
    elseif a == "--object" then
      if not args[i + 1] then errors.usage("--object needs a name") end
      o.object = args[i + 1]; i = i + 2
    elseif a == "--strict" then
      o.strict = true; i = i + 1
    elseif a:match("^source=") or a:match("^target=") or a:match("^name=") or a:match("^publication=")
        or a:match("^replica_role=") then
      local k, v = a:match("^([%w_]+)=(.*)$")
      cfg[k] = v; i = i + 1
    elseif a:sub(1, 1) == "-" then
      errors.usage("unknown option %s\n\n%s", a, M.usage)
    elseif not topic then
      topic = a; i = i + 1
    else
      errors.usage("unexpected argument '%s'\n\n%s", a, M.usage)
    end
  end
  local ts = require "pgtide.troubleshoot"
  if not topic then
    print(M.usage)
    return 0
  end
  local known = false
  for _, t in ipairs(ts.TOPICS) do if t == topic then known = true end end
  if not known then
    local hint = util.closest(topic, ts.TOPICS)
    errors.usage("unknown topic '%s'%s", topic, hint and string.format(" (did you mean '%s'?)", hint)
      or (" (topics: " .. table.concat(ts.TOPICS, ", ") .. ")"))
  end
  if not cfg.source then errors.usage("troubleshoot needs the source database: -c CONFIG or source=...") end
  if topic ~= "dependency-order" and not cfg.target then
    errors.usage("troubleshoot %s needs the target database: -c CONFIG or target=...", topic)
  end
  local pg = require "pg"
  local src = pg.connect(cfg.source, { label = "source" })
  local dst = cfg.target and pg.connect(cfg.target, { label = "target" }) or nil
  o.src, o.dst = src, dst
  -- the migration's publication: given, or the one pgtide would create (pgtide_<name>)
  o.publication_given = cfg.publication ~= nil
  local name = cfg.name
  if not name then   -- the local runbook's default, as `pgtide run local` would take it
    local rb = require("pgtide.runbooks").load("local")
    name = rb.default_name(cfg, rb)
  end
  o.publication = cfg.publication or require("pgtide.names").of(name).publication
  o.replica_role = cfg.replica_role
  local ok, f = pcall(ts.run, topic, o)
  src:close()
  if dst then dst:close() end
  if not ok then error(f, 0) end
  ts.print(f)
  if o.strict and f.count > 0 then return 1 end
  return 0
end

return M
