--[[
pgtide.dms.settings: what a DMS task is made of, as the seeds give it.

  settings.task_settings(option)  -> JSON text (option "schema-first" | "standard")
  settings.table_mappings{ schemas = {...} | rules = {...} | file = path } -> JSON text
  settings.source_attributes{ slot = name } -> the seed's extra connection attributes
  settings.describe(option)       -> a short human comparison (for --dry-run)

The two task-settings options are the seed's JSON, byte for byte
("Postgres Imports - Amazon DMS", Step 6, Option 1 and Option 2).  They
are kept as text so what DMS receives is exactly what the seed shows;
json.decode is used only to check them and to read single values.
]]
local json = require "json"
local sys = require "sys"

local M = {}

-- Option 1: Schema-first approach (recommended for production).
M.SCHEMA_FIRST = [[
{
  "TargetMetadata": {
    "TargetSchema": "",
    "SupportLobs": true,
    "FullLobMode": true,
    "LobChunkSize": 32,
    "LimitedSizeLobMode": false,
    "LobMaxSize": 0,
    "InlineLobMaxSize": 32,
    "BatchApplyEnabled": true,
    "TaskRecoveryTableEnabled": false
  },
  "FullLoadSettings": {
    "TargetTablePrepMode": "DO_NOTHING",
    "CreatePkAfterFullLoad": false,
    "StopTaskCachedChangesApplied": false,
    "MaxFullLoadSubTasks": 8,
    "TransactionConsistencyTimeout": 600,
    "CommitRate": 10000,
    "FullLoadIgnoreConflicts": true
  },
  "ValidationSettings": {
    "EnableValidation": true,
    "ValidationMode": "ROW_LEVEL",
    "ThreadCount": 5,
    "FailureMaxCount": 10000,
    "TableFailureMaxCount": 1000
  },
  "ChangeProcessingTuning": {
    "StatementCacheSize": 50,
    "CommitTimeout": 5,
    "BatchApplyPreserveTransaction": true,
    "BatchApplyTimeoutMin": 1,
    "BatchApplyTimeoutMax": 30,
    "MinTransactionSize": 5000,
    "MemoryKeepTime": 60,
    "BatchApplyMemoryLimit": 1000,
    "MemoryLimitTotal": 2048
  },
  "Logging": {
    "EnableLogging": true,
    "LogComponents": [
      {
        "Id": "TRANSFORMATION",
        "Severity": "LOGGER_SEVERITY_DEFAULT"
      },
      {
        "Id": "SOURCE_UNLOAD",
        "Severity": "LOGGER_SEVERITY_DEFAULT"
      },
      {
        "Id": "TARGET_LOAD",
        "Severity": "LOGGER_SEVERITY_DEFAULT"
      },
      {
        "Id": "SOURCE_CAPTURE",
        "Severity": "LOGGER_SEVERITY_DEFAULT"
      },
      {
        "Id": "TARGET_APPLY",
        "Severity": "LOGGER_SEVERITY_DEFAULT"
      }
    ]
  },
  "ControlTablesSettings": {
    "historyTimeslotInMinutes": 5,
    "ControlSchema": "",
    "HistoryTableEnabled": false,
    "SuspendedTablesTableEnabled": false,
    "StatusTableEnabled": false,
    "FullLoadExceptionTableEnabled": false
  }
}
]]

-- Option 2: Standard approach (matches CloudFormation template).
M.STANDARD = [[
{
  "TargetMetadata": {
    "SupportLobs": true,
    "FullLobMode": true,
    "LobChunkSize": 32,
    "BatchApplyEnabled": true,
    "TaskRecoveryTableEnabled": false
  },
  "FullLoadSettings": {
    "TargetTablePrepMode": "DROP_AND_CREATE",
    "CreatePkAfterFullLoad": false,
    "MaxFullLoadSubTasks": 8,
    "TransactionConsistencyTimeout": 600,
    "CommitRate": 10000,
    "FullLoadIgnoreConflicts": true
  },
  "ValidationSettings": {
    "EnableValidation": true,
    "ValidationMode": "ROW_LEVEL",
    "ThreadCount": 5,
    "FailureMaxCount": 10000,
    "TableFailureMaxCount": 1000
  },
  "Logging": {
    "EnableLogging": true,
    "LogComponents": [
      {
        "Id": "SOURCE_UNLOAD",
        "Severity": "LOGGER_SEVERITY_DEFAULT"
      },
      {
        "Id": "SOURCE_CAPTURE",
        "Severity": "LOGGER_SEVERITY_DEFAULT"
      },
      {
        "Id": "TARGET_LOAD",
        "Severity": "LOGGER_SEVERITY_DEFAULT"
      },
      {
        "Id": "TARGET_APPLY",
        "Severity": "LOGGER_SEVERITY_DEFAULT"
      },
      {
        "Id": "TASK_MANAGER",
        "Severity": "LOGGER_SEVERITY_DEFAULT"
      }
    ]
  }
}
]]

M.OPTIONS = { ["schema-first"] = M.SCHEMA_FIRST, standard = M.STANDARD }

--[[
The objects DMS makes for itself: on the target its control tables
(awsdms_apply_exceptions, always; awsdms_validation_failures_v1 with
validation; awsdms_status, awsdms_suspended_tables, awsdms_history when
enabled: "Control table task settings", DMS User Guide) in the control
schema or the target's default schema; on the source the WAL heartbeat
table awsdms_heartbeat (heartbeatEnable) and the DDL-capture artifacts
(awsdms_ddl_audit, awsdms_intercept_ddl).  Validation, counts and the
pre-cutover check leave them out (schema_diff.ignored patterns); the
table mappings exclude them; cleanup drops them.
]]
M.DMS_OBJECTS = { "awsdms_*", "dmslogs.*" }

--[[
settings.task_settings(option [, file]) -> JSON text.  'file', when
given, replaces the seed's option with the user's own settings (checked
to be a JSON object).  Raises on an unknown option or bad JSON.
]]
function M.task_settings(option, file)
  if file and file ~= "" then
    local text, err = sys.readfile(file)
    if not text then error(string.format("cannot read task settings %s: %s", file, err), 0) end
    local ok, v = pcall(json.decode, text)
    if not ok or type(v) ~= "table" or json.is_array(v) then
      error(string.format("task settings %s: not a JSON object (%s)", file, tostring(v)), 0)
    end
    return text
  end
  local text = M.OPTIONS[option or "schema-first"]
  if not text then
    error(string.format("unknown task settings option '%s' (schema-first or standard)",
      tostring(option)), 0)
  end
  return text
end

-- The decoded settings (a fresh table each call).
function M.decoded(option, file)
  return json.decode(M.task_settings(option, file))
end

-- TargetTablePrepMode of the settings that will be used.
function M.prep_mode(option, file)
  local s = M.decoded(option, file)
  return s.FullLoadSettings and s.FullLoadSettings.TargetTablePrepMode or "DROP_AND_CREATE"
end

--[[
settings.table_mappings(spec) -> JSON text.
  spec.file:    a JSON file with the user's own rules (selection and
                transformation rules, as in the seed's advanced mapping);
  spec.rules:   a Lua list of rules (same shape);
  spec.schemas: the schemas whose tables are all migrated (the seed's
                basic mapping, one selection rule per schema; default
                {"public"}).
Raises when the result has no selection rule (DMS would reject it).
]]
function M.table_mappings(spec)
  spec = spec or {}
  local doc
  if spec.file and spec.file ~= "" then
    local text, err = sys.readfile(spec.file)
    if not text then error(string.format("cannot read table mappings %s: %s", spec.file, err), 0) end
    local ok, v = pcall(json.decode, text)
    if not ok or type(v) ~= "table" or type(v.rules) ~= "table" then
      error(string.format("table mappings %s: expected a JSON object with a \"rules\" list", spec.file), 0)
    end
    doc = v
  elseif spec.rules then
    doc = { rules = spec.rules }
  else
    local rules = {}
    for i, schema in ipairs(spec.schemas or { "public" }) do
      rules[#rules + 1] = {
        ["rule-type"] = "selection",
        ["rule-id"] = tostring(i),
        ["rule-name"] = tostring(i),
        ["object-locator"] = { ["schema-name"] = schema, ["table-name"] = "%" },
        ["rule-action"] = "include",
        filters = json.array({}),
      }
    end
    doc = { rules = rules }
  end
  local selections = 0
  for _, r in ipairs(doc.rules) do
    if r["rule-type"] == "selection" and r["rule-action"] == "include" then selections = selections + 1 end
  end
  if selections == 0 then
    error("table mappings: no selection rule includes any table", 0)
  end
  json.array(doc.rules)
  return json.encode(doc)
end

--[[
settings.selected_schemas(mappings_json) -> list of schema names (or
patterns) included by selection rules; used to scope checks and
validation to what DMS will migrate.
]]
function M.selected_schemas(mappings)
  local doc = type(mappings) == "string" and json.decode(mappings) or mappings
  local out, seen = {}, {}
  for _, r in ipairs(doc.rules or {}) do
    local loc = r["object-locator"] or {}
    if r["rule-type"] == "selection" and r["rule-action"] == "include" and loc["schema-name"]
        and not seen[loc["schema-name"]] then
      seen[loc["schema-name"]] = true
      out[#out + 1] = loc["schema-name"]
    end
  end
  return out
end

--[[
settings.table_filter(mappings_json) -> function(schema, table) -> bool:
whether DMS would migrate the table, evaluating include/exclude
selection rules with DMS's '%' wildcard (last matching rule wins for
exclusions, as DMS applies excludes after includes).
]]
function M.table_filter(mappings)
  local doc = type(mappings) == "string" and json.decode(mappings) or mappings
  local function pattern(p)   -- DMS '%' wildcard -> Lua pattern
    local parts = {}
    for ch in tostring(p):gmatch(".") do
      if ch == "%" then parts[#parts + 1] = ".*"
      elseif ch:match("[%^%$%(%)%.%[%]%*%+%-%?]") then parts[#parts + 1] = "%" .. ch
      else parts[#parts + 1] = ch end
    end
    return "^" .. table.concat(parts) .. "$"
  end
  local includes, excludes = {}, {}
  for _, r in ipairs(doc.rules or {}) do
    local loc = r["object-locator"] or {}
    if r["rule-type"] == "selection" then
      local entry = { s = pattern(loc["schema-name"] or "%"), t = pattern(loc["table-name"] or "%") }
      if r["rule-action"] == "include" then includes[#includes + 1] = entry
      elseif r["rule-action"] == "exclude" then excludes[#excludes + 1] = entry end
    end
  end
  return function(schema, table_name)
    local inc = false
    for _, e in ipairs(includes) do
      if schema:match(e.s) and table_name:match(e.t) then inc = true; break end
    end
    if not inc then return false end
    for _, e in ipairs(excludes) do
      if schema:match(e.s) and table_name:match(e.t) then return false end
    end
    return true
  end
end

--[[
settings.source_attributes{ slot = name, plugin = "test_decoding",
heartbeat = minutes, heartbeat_schema = name } -> the seed's "Extra
connection attributes" string for the source endpoint:
pluginName=test_decoding; slotName=<slot>; captureDDLs=false;
maxFileSize=32768; plus heartbeatEnable=true;heartbeatFrequency=<minutes>
(and heartbeatSchema when not public) unless heartbeat is nil or 0.  The
slot name is per migration (the seed's 'dms_slot_planetscale' would
collide between migrations); slot = false names none (DMS makes its
own, e.g. for a full load).  The WAL heartbeat "mimics a dummy
transaction ... prevents idle logical replication slots from holding
onto old WAL logs" (PostgreSQLSettings.HeartbeatEnable, DMS API): a
quiet source database otherwise keeps its WAL until the disk fills.
]]
function M.source_attributes(opts)
  opts = opts or {}
  local out = { string.format("pluginName=%s;", opts.plugin or "test_decoding") }
  assert(opts.slot ~= nil, "slot name required (false for none)")
  if opts.slot then out[#out + 1] = string.format("slotName=%s;", opts.slot) end
  out[#out + 1] = "captureDDLs=false;maxFileSize=32768;"
  if opts.heartbeat and opts.heartbeat > 0 then
    out[#out + 1] = string.format("heartbeatEnable=true;heartbeatFrequency=%d;", opts.heartbeat)
    if opts.heartbeat_schema and opts.heartbeat_schema ~= "" and opts.heartbeat_schema ~= "public" then
      out[#out + 1] = string.format("heartbeatSchema=%s;", opts.heartbeat_schema)
    end
  end
  return table.concat(out)
end

--[[
settings.parse_attributes(text) -> table of the key=value pairs of an
extra-connection-attributes string (keys as written).
]]
function M.parse_attributes(text)
  local out = {}
  for pair in tostring(text or ""):gmatch("[^;]+") do
    local k, v = pair:match("^%s*([^=]-)%s*=%s*(.-)%s*$")
    if k and k ~= "" then out[k] = v end
  end
  return out
end

-- A few lines comparing the two options (the seed's table), for plans.
function M.describe(option)
  local mode = M.prep_mode(option)
  if option == "standard" then
    return "task settings: the seed's Option 2 (standard): TargetTablePrepMode " .. mode ..
      " (DMS recreates the tables: secondary indexes, defaults and checks on them are lost)"
  end
  return "task settings: the seed's Option 1 (schema-first): TargetTablePrepMode " .. mode ..
    ", row-level validation, batch apply, ChangeProcessingTuning"
end

return M
