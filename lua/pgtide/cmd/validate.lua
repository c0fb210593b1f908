-- pgtide validate -c CONFIG [--tables a,b] [--json FILE] [--jobs N] [--redact] ...
local config = require "pgtide.config"
local errors = require "pgtide.errors"
local state = require "pgtide.state"
local util = require "pgtide.util"
local validate = require "pgtide.validate"

local M = {
  summary = "compare source and target: every row of every table, and the schema",
  usage = [[
pgtide validate -c CONFIG [--tables a,b] [--ignore PATTERNS] [--json FILE] [--jobs N] [--redact]
                [--mode offline|recheck] [--recheck N] [--recheck-delay SECONDS]
                [--schema-only | --data-only] [--max-rows N] [--chunk-rows N]
                [--state DIR] [--source CONNINFO] [--target CONNINFO] [--no-progress]

Compares the source and target databases named in the config file (or by
--source/--target): the schema object by object (with the DDL that fixes
each difference), and the data row by row.  Rows are hashed in chunks on
both servers; only chunks that differ are read, so the report names the
exact missing, extra and changed rows (and the columns that differ)
without copying matching tables over the network.  Tables without a
primary key or unique NOT NULL key are compared as multisets of rows.

--tables         only these tables (schema.table, or table for public);
                 the schema comparison is then limited to their objects
--ignore PATTERNS  leave these objects out on both sides (comma-separated
                 NAME or SCHEMA.NAME, * for any characters): what a
                 replication tool made for itself, e.g. --ignore 'awsdms_*'
                 after AWS DMS (config: ignore_objects = { "awsdms_*" })
--json FILE      also write the JSON report to FILE (it is always written to
                 the state directory as validate.json, default
                 .pgtide/<name>/validate.json; the run's own validation.json
                 is left alone)
--jobs N         parallel workers, each with one connection per server
--redact         hide column values in the report (keys are still shown)
--max-rows N     differing rows listed per table (default 100; all are counted)
--chunk-rows N   rows per chunk of the key space (default 20000)
--mode offline   (default) one snapshot per side: exact when nothing writes
--mode recheck   for a target replicated by DMS or another tool while writes
                 continue: rows that differ are re-checked after a delay
                 (--recheck N times, --recheck-delay SECONDS apart) and only
                 those still different are reported
                 (The consistent mode, exact during pgtide's own CDC, is used
                 by the local runbook's steps: it needs the running CDC.)

Exit codes: 0 no differences, 1 differences found, 2 usage or configuration
error, 3 interrupted, 4 the comparison could not be completed.]],
}

local function parse(args)
  local o = {}
  local i = 1
  local function value(flag)
    local v = args[i + 1]
    if v == nil then errors.usage("%s needs a value\n\n%s", flag, M.usage) end
    i = i + 2
    return v
  end
  local function int(flag, v, min)
    local n = tonumber(v)
    if not n or n ~= math.floor(n) or n < min then
      errors.usage("%s must be an integer >= %d (got '%s')", flag, min, v)
    end
    return math.floor(n)
  end
  while i <= #args do
    local a = args[i]
    local flag, inline = a:match("^(%-%-[%w-]+)=(.*)$")
    if flag then
      table.insert(args, i + 1, inline)
      a = flag
    end
    if a == "-c" or a == "--config" then o.config = value(a)
    elseif a == "--tables" then o.tables = util.split(value(a), ",")
    elseif a == "--ignore" then o.ignore_objects = util.split(value(a), ",")
    elseif a == "--json" then o.json = value(a)
    elseif a == "--jobs" or a == "-j" then o.jobs = int(a, value(a), 1)
    elseif a == "--redact" then o.redact = true; i = i + 1
    elseif a == "--mode" then o.mode = value(a)
    elseif a == "--recheck" then o.recheck = int(a, value(a), 1)
    elseif a == "--recheck-delay" then
      o.recheck_delay = tonumber(value(a))
      if not o.recheck_delay or o.recheck_delay < 0 then
        errors.usage("--recheck-delay must be a number of seconds")
      end
    elseif a == "--schema-only" then o.data = false; i = i + 1
    elseif a == "--data-only" then o.schema = false; i = i + 1
    elseif a == "--max-rows" then o.max_rows = int(a, value(a), 0)
    elseif a == "--chunk-rows" then o.chunk_rows = int(a, value(a), 100)
    elseif a == "--state" then o.state_dir = value(a)
    elseif a == "--source" then o.source = value(a)
    elseif a == "--target" then o.target = value(a)
    elseif a == "--no-progress" then o.progress = false; i = i + 1
    elseif a == "-h" or a == "--help" then o.help = true; i = i + 1
    else
      errors.usage("unknown argument '%s'\n\n%s", a, M.usage)
    end
  end
  return o
end

function M.run(args)
  local o = parse(args)
  if o.help then
    io.write(M.usage, "\n")
    return 0
  end
  if o.data == false and o.schema == false then
    errors.usage("--schema-only and --data-only cannot be combined")
  end
  if o.mode == "consistent" then
    errors.usage("--mode consistent needs pgtide's running CDC: it is used by the local runbook's"
      .. " steps; from the command line use --mode offline (no writes) or --mode recheck")
  end
  if o.mode and o.mode ~= "offline" and o.mode ~= "recheck" then
    errors.usage("--mode must be offline or recheck (got '%s')", o.mode)
  end
  if (o.recheck or o.recheck_delay) and o.mode ~= "recheck" then
    errors.usage("--recheck and --recheck-delay need --mode recheck")
  end
  local cfg = {}
  if o.config then cfg = config.load(o.config) end
  o.source = o.source or cfg.source
  o.target = o.target or cfg.target
  if o.ignore_objects == nil and type(cfg.ignore_objects) == "table" then o.ignore_objects = cfg.ignore_objects end
  if not o.source or not o.target then
    errors.usage("validate needs a source and a target: give -c CONFIG (with source and"
      .. " target) or --source and --target\n\n%s", M.usage)
  end
  if cfg.log_level then require("log").set_level(cfg.log_level) end
  local name = cfg.name or "local"
  if not tostring(name):match("^[%w][%w_.-]*$") then
    errors.usage("migration name '%s' may only contain letters, digits, '_', '.' and '-'", name)
  end
  o.state_dir = o.state_dir or cfg.state_dir or state.default_dir(name)
  if o.jobs == nil and math.type(cfg.jobs) == "integer" and cfg.jobs > 0 then o.jobs = cfg.jobs end
  o.state_files = { "validate.json" }   -- the run's validation.json is the run's
  local report = validate.run(o)
  io.write(validate.summary(report))
  return validate.exit_code(report)
end

return M
