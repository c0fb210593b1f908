--[[
pgtide.validate: data and schema validation, the report and its summary.

  local validate = require "pgtide.validate"
  local report = validate.run {
    source = conninfo, target = conninfo,
    tables = { "app.orders", ... },  -- nil: every table
    ignore_objects = { "awsdms_*" }, -- left out on both sides (schema_diff.ignored):
                                     -- what a replication tool made for itself
    schema = true, data = true,      -- which halves to run
    jobs = 4, chunk_rows = 20000, max_rows = 100, max_value_len = 64,
    redact = false,                  -- hide column values (keys stay)
    schema_ignore = { triggers = { enabled = true } },  -- fields the schema half skips
    mode = "offline",                -- | "consistent" | "recheck"
    cdc = cdc,                       -- consistent mode: the running CDC (see below)
    pause_at = fn, resume = fn,      -- ... or these two functions
    recheck = 3, recheck_delay = 10, -- recheck mode
    point_timeout = 300,             -- consistent mode: longest wait for the source's
                                     -- transactions in progress to end at the point
    state_dir = ".pgtide/name",      -- validation.json is written there
    state_files = { "validation.json" },   -- ... under these names
    json = "report.json",            -- ... and there
    progress = true,
  }
  io.write(validate.summary(report))
  return validate.exit_code(report)  -- 0 equal, 1 different, 4 could not validate

The data half is the C core (core.validate); the schema half is
pgtide.schema_diff over pgtide.catalog.  Errors of one half are recorded
in the report (data_error / schema_error) and do not hide the other
half's result.  Usage mistakes raise usage errors.

Consistent mode (no lock on the source): the data comparison calls
pause_at(lsn) at the source's current WAL position (a hold), creates a
temporary replication slot whose exported snapshot every worker reads
the source under, calls pause_at(point) with the slot's LSN, takes the
target snapshot and calls resume().  pause_at must return only once
change apply has applied every source transaction ending at or before
lsn and holds the later ones; the second call moves the pause forward.
With cdc = object, pause_at calls cdc:pause_at(lsn) and then
cdc:wait_applied(lsn, timeout) (or the native worker's wait_until), which
must return true; resume calls cdc:resume().
]]
local errors = require "pgtide.errors"
local util = require "pgtide.util"
local json = require "json"
local log = require "log"
local sys = require "sys"

local M = {}

M.EXIT_EQUAL, M.EXIT_DIFFERENT, M.EXIT_FAILED = 0, 1, 4

-- The hook functions for a CDC object (see above).
function M.cdc_hook(cdc, timeout)
  timeout = timeout or 600
  -- wait_applied (lua/core.lua) or the native worker's wait_until: the
  -- target snapshot must not be taken before apply reached the pause point.
  local wait = cdc.wait_applied or cdc.wait_until
  if not wait then
    error("the CDC object has neither wait_applied nor wait_until: cannot take a consistent point", 2)
  end
  local function pause_at(lsn)
    cdc:pause_at(lsn)
    local ok, why = wait(cdc, lsn, timeout)
    if not ok then
      error(string.format("change apply did not reach %s within %d s%s", lsn, timeout,
        why and (": " .. tostring(why)) or ""), 0)
    end
  end
  local function resume() cdc:resume() end
  return pause_at, resume
end

local function safe(conninfo)
  local ok, pg = pcall(require, "pg")
  if ok and pg.safe_conninfo then return pg.safe_conninfo(conninfo) end
  return sys.redact(conninfo)
end

-- "schema.table" -> schema, table, as the data half reads it: either part
-- may be double-quoted (with "" for a quote, dots allowed inside); no dot
-- means schema public.  nil when malformed.
local function split_name(name)
  local parts, i = {}, 1
  while true do
    local part
    if name:sub(i, i) == '"' then
      local buf, j = {}, i + 1
      while true do
        local q = name:find('"', j, true)
        if not q then return nil end
        buf[#buf + 1] = name:sub(j, q - 1)
        if name:sub(q + 1, q + 1) ~= '"' then i = q + 1; break end
        buf[#buf + 1] = '"'
        j = q + 2
      end
      part = table.concat(buf)
    else
      local dot = name:find(".", i, true) or #name + 1
      part = name:sub(i, dot - 1)
      i = dot
    end
    if part == "" then return nil end
    parts[#parts + 1] = part
    if i > #name then break end
    if name:sub(i, i) ~= "." or #parts == 2 then return nil end
    i = i + 1
  end
  if #parts == 1 then return "public", parts[1] end
  return parts[1], parts[2]
end
M.split_name = split_name

local function check_options(o)
  if type(o) ~= "table" then errors.usage("validate.run needs an options table") end
  if type(o.source) ~= "string" or type(o.target) ~= "string" then
    errors.usage("validation needs source and target connection strings")
  end
  local mode = o.mode or "offline"
  if mode ~= "offline" and mode ~= "consistent" and mode ~= "recheck" then
    errors.usage("unknown validation mode '%s' (offline, consistent or recheck)", tostring(mode))
  end
  if mode == "consistent" and not o.cdc and not (o.pause_at and o.resume) then
    errors.usage("the consistent mode needs the running CDC (cdc=) or pause_at/resume functions;"
      .. " use mode=recheck against DMS or another replication")
  end
  if o.tables ~= nil and type(o.tables) ~= "table" then
    errors.usage("tables must be a list of names")
  end
  if o.ignore_objects ~= nil and type(o.ignore_objects) ~= "table" then
    errors.usage("ignore_objects must be a list of patterns (NAME or SCHEMA.NAME, * for any characters)")
  end
  for _, name in ipairs(o.tables or {}) do
    if type(name) ~= "string" or not split_name(name) then
      errors.usage("invalid table name '%s' (expected schema.table)", tostring(name))
    end
  end
  return mode
end

-- The schema half: describe both sides, compare.
local function run_schema(o)
  local pg = require "pg"
  local schema_diff = require "pgtide.schema_diff"
  local src <close> = pg.connect(o.source)
  local tgt <close> = pg.connect(o.target)
  local opts = { ignore = o.schema_ignore, ignore_objects = o.ignore_objects }
  if o.tables and #o.tables > 0 then
    opts.tables = {}
    for _, name in ipairs(o.tables) do
      local s, t = split_name(name)   -- checked by check_options
      opts.tables[s .. "." .. t] = true
    end
  end
  return schema_diff.run(src, tgt, opts)
end

-- The source tables the data half compares when none are named and some
-- objects are ignored: every table but those (nil: let the core list them).
local function data_tables(o)
  if (o.tables and #o.tables > 0) or not (o.ignore_objects and #o.ignore_objects > 0) then return o.tables end
  local pg = require "pg"
  local catalog = require "pgtide.catalog"
  local skip = require("pgtide.schema_diff").ignored(o.ignore_objects)
  local src <close> = pg.connect(o.source)
  local out = {}
  for _, t in ipairs(catalog.tables(src)) do
    if not skip("tables", t) and not t.partition_of then out[#out + 1] = catalog.qname(t.schema, t.name) end
  end
  return out
end

-- The data half: the C core.
local function run_data(o, mode)
  local core = require "core.validate"
  local pause_at, resume = o.pause_at, o.resume
  if mode == "consistent" and o.cdc then pause_at, resume = M.cdc_hook(o.cdc, o.pause_timeout) end
  return core.run {
    source = o.source, target = o.target, tables = data_tables(o),
    jobs = o.jobs or math.max(1, math.min(sys.ncpu and sys.ncpu() or 2, 8)),
    chunk_rows = o.chunk_rows, max_rows = o.max_rows, max_value_len = o.max_value_len,
    redact = o.redact and true or false, mode = mode, pause_at = pause_at, resume = resume,
    recheck = o.recheck, recheck_delay = o.recheck_delay,
    statement_timeout = o.statement_timeout, point_timeout = o.point_timeout,
    progress = o.progress ~= false,
  }
end

-- Empty lists must encode as [] (non-empty sequences already do).
local LIST_FIELDS = { "tables", "rows", "columns", "key", "only_source", "only_target", "values",
                      "differences", "notes" }

local function mark_lists(t)
  if type(t) ~= "table" then return end
  for _, f in ipairs(LIST_FIELDS) do
    if type(t[f]) == "table" and #t[f] == 0 and next(t[f]) == nil then t[f] = json.array({}) end
  end
  for _, v in pairs(t) do if type(v) == "table" then mark_lists(v) end end
end

-- Write the report as JSON (redacted, atomically).  Raises on failure.
function M.write(report, path)
  local copy = util.copy(report)
  mark_lists(copy)
  local text = sys.redact(json.encode(copy, { pretty = true }))
  local ok, err = sys.write_atomic(path, text .. "\n")
  if not ok then error(errors.new { message = "cannot write " .. path .. ": " .. tostring(err) }, 0) end
end

--[[
run(opts) -> report.  See the top of this file.  The report:
  { version, started_at, finished_at, seconds, source, target, mode,
    tables (the filter), result = "equal" | "different" | "failed",
    schema = schema_diff result | nil, schema_error = message | nil,
    data = core.validate report | nil, data_error = message | nil,
    files = { paths written } }
]]
function M.run(o)
  local mode = check_options(o)
  local t0 = sys.monotonic()
  local report = {
    version = 1, started_at = util.now_iso(), source = safe(o.source), target = safe(o.target),
    mode = mode, tables = o.tables,
  }
  if o.schema ~= false then
    log.info("validate: comparing schemas")
    local ok, res = pcall(run_schema, o)
    if ok then report.schema = res
    elseif errors.is_interrupt(res) then error(res, 0)
    else report.schema_error = errors.message(res) end
  end
  if o.data ~= false then
    log.info("validate: comparing data (%s mode)", mode)
    local ok, res = pcall(run_data, o, mode)
    if ok then report.data = res
    elseif type(res) == "table" and res.interrupted then
      error(errors.new { message = "interrupted", interrupted = true }, 0)
    elseif errors.is_usage(res) then error(res, 0)
    else report.data_error = errors.message(res) end
  end
  report.finished_at = util.now_iso()
  report.seconds = sys.monotonic() - t0
  report.result = M.result(report)
  report.files = {}
  if o.state_dir then
    sys.mkdir_p(o.state_dir)
    for _, name in ipairs(o.state_files or { "validation.json" }) do
      report.files[#report.files + 1] = o.state_dir .. "/" .. name
    end
  end
  if o.json then report.files[#report.files + 1] = o.json end
  for _, path in ipairs(report.files) do M.write(report, path) end
  return report
end

-- "equal", "different" or "failed" (something could not be compared).
function M.result(r)
  local failed = r.schema_error or r.data_error
  local different = false
  if r.schema and not r.schema.ok then different = true end
  if r.data then
    if (r.data.tables_failed or 0) > 0 then failed = true end
    if (r.data.tables_different or 0) > 0 then different = true end
  end
  if failed then return "failed" end
  return different and "different" or "equal"
end

function M.exit_code(r)
  local res = r.result or M.result(r)
  if res == "equal" then return M.EXIT_EQUAL end
  if res == "different" then return M.EXIT_DIFFERENT end
  return M.EXIT_FAILED
end

-- {==================================================================
-- The human summary
-- ===================================================================

local function value(v, null, hidden)
  if hidden then return "(hidden)" end
  if null or v == nil then return "NULL" end
  return "'" .. v:gsub("\n", "\\n") .. "'"
end

local function key_text(t, row)
  local parts = {}
  for i, col in ipairs(t.key or {}) do
    parts[#parts + 1] = col .. "=" .. tostring(row.key and row.key[i])
  end
  return table.concat(parts, ", ")
end

local function count(n)
  local s = tostring(math.floor(n or 0))
  return (s:reverse():gsub("(%d%d%d)", "%1,"):reverse():gsub("^,", ""))
end

local function data_summary(d, lines, opts)
  local rows = 0
  for _, t in ipairs(d.tables or {}) do rows = rows + (t.source_rows or 0) end
  local pct = (d.table_bytes or 0) > 0 and
    100 * ((d.bytes_source or 0) + (d.bytes_target or 0)) / d.table_bytes or 0
  lines[#lines + 1] = string.format(
    "Data (%s): %d tables: %d equal, %d different, %d failed; %s source rows in %s;"
    .. " received %s (%.2f%% of %s of tables)", d.mode, #(d.tables or {}), d.tables_equal or 0,
    d.tables_different or 0, d.tables_failed or 0, count(rows), util.format_duration(d.seconds),
    util.format_bytes((d.bytes_source or 0) + (d.bytes_target or 0)), pct,
    util.format_bytes(d.table_bytes))
  if d.lsn then
    lines[#lines + 1] = string.format("  consistent point: source LSN %s (a temporary replication"
      .. " slot, taken in %.0f ms; no lock on the source)", d.lsn, d.point_ms or 0)
  end
  local shown = 0
  for _, t in ipairs(d.tables or {}) do
    local name = t.schema .. "." .. t.name
    if t.status == "different" then
      local how = t.multiset and "no key: compared as a multiset of rows" or
        (t.key_kind .. " " .. table.concat(t.key, ", "))
      lines[#lines + 1] = string.format("  %s: %s missing, %s extra, %s changed (%s)%s", name,
        count(t.missing), count(t.extra), count(t.changed), how,
        (t.rechecks or 0) > 0 and string.format("; still different after %d re-checks", t.rechecks) or "")
      for _, row in ipairs(t.rows or {}) do
        if shown >= (opts.rows or 20) then break end
        shown = shown + 1
        if t.multiset then
          local vals = {}
          for _, v in ipairs(row.values or {}) do vals[#vals + 1] = value(v.value, v.null) end
          lines[#lines + 1] = string.format("    %-8s row x%d on source, x%d on target: %s",
            row.kind, row.source_count, row.target_count,
            #vals > 0 and ("(" .. table.concat(vals, ", ") .. ")") or ("hash " .. row.hash))
        elseif row.kind == "changed" then
          local cols = {}
          for _, c in ipairs(row.columns or {}) do
            cols[#cols + 1] = string.format("%s %s -> %s", c.name,
              value(c.source, c.source_null, c.hidden), value(c.target, c.target_null, c.hidden))
          end
          lines[#lines + 1] = string.format("    changed  %s: %s", key_text(t, row),
            table.concat(cols, "; "))
        else
          lines[#lines + 1] = string.format("    %-8s %s", row.kind, key_text(t, row))
        end
      end
      if t.truncated then
        lines[#lines + 1] = string.format("    ... %s differing rows in all (the report lists %d)",
          count(t.missing + t.extra + t.changed), #(t.rows or {}))
      end
    elseif t.status == "missing_on_target" then
      lines[#lines + 1] = string.format("  %s: the table is missing on the target", name)
    elseif t.status == "not_found" or t.status == "error" then
      lines[#lines + 1] = string.format("  %s: %s", name, tostring(t.error))
    end
    if t.status ~= "not_found" and t.only_source and #t.only_source > 0 then
      lines[#lines + 1] = string.format("  %s: columns only on the source (not compared): %s", name,
        table.concat(t.only_source, ", "))
    end
    if t.only_target and #t.only_target > 0 then
      lines[#lines + 1] = string.format("  %s: columns only on the target (not compared): %s", name,
        table.concat(t.only_target, ", "))
    end
  end
end

local function schema_summary(s, lines, opts)
  local miss, extra, diff = 0, 0, 0
  for _, d in ipairs(s.differences) do
    if d.problem == "missing" then miss = miss + 1
    elseif d.problem == "extra" then extra = extra + 1
    else diff = diff + 1 end
  end
  lines[#lines + 1] = string.format("Schema: %d objects compared: %d missing, %d extra, %d different",
    s.objects or 0, miss, extra, diff)
  local al = s.aligned
  if al and al.deparsed > 0 then
    lines[#lines + 1] = string.format("  %d definition(s) printed differently by the two servers were "
      .. "compared as the target prints them%s", al.deparsed,
      al.failed > 0 and string.format(" (%d could not be recreated there)", al.failed) or "")
  end
  for _, n in ipairs(al and al.notes or {}) do lines[#lines + 1] = "  note: " .. n end
  local schema_diff = require "pgtide.schema_diff"
  for i, d in ipairs(s.differences) do
    if i > (opts.schema_rows or 50) then
      lines[#lines + 1] = string.format("  ... %d more (see the JSON report)", #s.differences - i + 1)
      break
    end
    lines[#lines + 1] = "  " .. schema_diff.format(d)
    if d.fix then
      lines[#lines + 1] = "      fix: " .. d.fix:gsub("\n", "\n           ")
    end
  end
end

-- summary(report [, opts]) -> text (several lines, ending in a newline).
function M.summary(r, opts)
  opts = opts or {}
  local lines = {}
  if r.schema then schema_summary(r.schema, lines, opts)
  elseif r.schema_error then lines[#lines + 1] = "Schema: could not compare: " .. r.schema_error end
  if r.data then data_summary(r.data, lines, opts)
  elseif r.data_error then lines[#lines + 1] = "Data: could not compare: " .. r.data_error end
  local res = r.result or M.result(r)
  local where = r.files and #r.files > 0 and (" (report: " .. table.concat(r.files, ", ") .. ")") or ""
  lines[#lines + 1] = string.format("Result: %s%s", res:upper(), where)
  return sys.redact(table.concat(lines, "\n")) .. "\n"
end

-- }==================================================================

--[[
verify(ctx [, opts]) for runbook steps: validates ctx.params.source
against ctx.params.target, writes the report to the state directory,
records a short summary in ctx.out.validation and raises a step failure
when anything differs or could not be compared.  Returns the report.
]]
function M.verify(ctx, opts)
  opts = util.copy(opts or {})
  opts.source = opts.source or ctx.params.source
  opts.target = opts.target or ctx.params.target
  opts.state_dir = opts.state_dir or ctx.state_dir
  -- the run's latest validation, and each step's own (the migration report lists them all)
  opts.state_files = opts.state_files or { "validation.json",
    "validation-" .. (ctx.step and ctx.step.name or "step") .. ".json" }
  local report = M.run(opts)
  local d = report.data or {}
  if ctx.out then
    ctx.out.validation = {
      result = report.result, tables_different = d.tables_different, missing = d.missing,
      extra = d.extra, changed = d.changed,
      schema_differences = report.schema and #report.schema.differences or nil,
    }
  end
  io.stderr:write(M.summary(report))
  if report.result ~= "equal" then
    local runbook = require "pgtide.runbook"
    runbook.fail("validation: source and target %s (see %s)",
      report.result == "different" and "differ" or "could not be compared",
      table.concat(report.files, ", "))
  end
  return report
end

return M
