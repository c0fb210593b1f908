--[[
pgtide.dms.task_settings: a task-settings document checked against the
DMS documentation ("Specifying task settings for AWS Database Migration
Service tasks", DMS User Guide) before CreateReplicationTask, saying
what DMS will do with what it would reject or silently change.

  task_settings.check(doc) -> problems { {level = "error" | "warn", key, text} }

  error  DMS rejects the task (a value outside its documented choices or
         range): the runbook stops before creating anything
  warn   DMS accepts the document but does not do what it says: a key
         it does not read (wrong casing, wrong section: DMS ignores it and
         uses its default), or settings that change each other (batch
         apply with full LOB mode applies LOB tables one change at a time)

Only the settings the seeds and DMS's PostgreSQL endpoints use are known
here; a section pgtide does not know is reported as a warning too.
]]
local M = {}

-- Documented keys per section (DMS User Guide, task settings pages).
local KEYS = {
  TargetMetadata = { "TargetSchema", "SupportLobs", "FullLobMode", "LobChunkSize", "LimitedSizeLobMode",
    "LobMaxSize", "InlineLobMaxSize", "LoadMaxFileSize", "ParallelLoadThreads", "ParallelLoadBufferSize",
    "ParallelLoadQueuesPerThread", "ParallelApplyThreads", "ParallelApplyBufferSize",
    "ParallelApplyQueuesPerThread", "BatchApplyEnabled", "TaskRecoveryTableEnabled" },
  FullLoadSettings = { "TargetTablePrepMode", "CreatePkAfterFullLoad", "StopTaskCachedChangesApplied",
    "StopTaskCachedChangesNotApplied", "MaxFullLoadSubTasks", "TransactionConsistencyTimeout", "CommitRate" },
  ErrorBehavior = { "DataErrorPolicy", "DataTruncationErrorPolicy", "DataMaskingErrorPolicy",
    "DataErrorEscalationPolicy", "DataErrorEscalationCount", "TableErrorPolicy", "TableErrorEscalationPolicy",
    "TableErrorEscalationCount", "RecoverableErrorCount", "RecoverableErrorInterval",
    "RecoverableErrorThrottling", "RecoverableErrorThrottlingMax", "RecoverableErrorStopRetryAfterThrottlingMax",
    "ApplyErrorDeletePolicy", "ApplyErrorInsertPolicy", "ApplyErrorUpdatePolicy", "ApplyErrorEscalationPolicy",
    "ApplyErrorEscalationCount", "ApplyErrorFailOnTruncationDdl", "FullLoadIgnoreConflicts",
    "FailOnTransactionConsistencyBreached", "FailOnNoTablesCaptured", "EventErrorPolicy" },
  ControlTablesSettings = { "ControlSchema", "HistoryTimeslotInMinutes", "HistoryTableEnabled",
    "SuspendedTablesTableEnabled", "StatusTableEnabled", "FullLoadExceptionTableEnabled",
    "CommitPositionTableEnabled" },
  ChangeProcessingTuning = { "BatchApplyPreserveTransaction", "BatchApplyTimeoutMin", "BatchApplyTimeoutMax",
    "BatchApplyMemoryLimit", "BatchSplitSize", "MinTransactionSize", "CommitTimeout", "MemoryLimitTotal",
    "MemoryKeepTime", "StatementCacheSize", "RecoveryTimeout" },
  ChangeProcessingDdlHandlingPolicy = { "HandleSourceTableDropped", "HandleSourceTableTruncated",
    "HandleSourceTableAltered" },
  ValidationSettings = { "EnableValidation", "ValidationMode", "ThreadCount", "PartitionSize", "FailureMaxCount",
    "RecordFailureDelayInMinutes", "RecordSuspendDelayInMinutes", "MaxKeyColumnSize", "TableFailureMaxCount",
    "ValidationOnly", "HandleCollationDiff", "RecordFailureDelayLimitInMinutes", "SkipLobColumns",
    "ValidationPartialLobSize", "ValidationQueryCdcDelaySeconds" },
  Logging = { "EnableLogging", "EnableLogContext", "LogComponents", "CloudWatchLogGroup", "CloudWatchLogStream" },
  StreamBufferSettings = { "StreamBufferCount", "StreamBufferSizeInMB", "CtrlStreamBufferSizeInMB" },
  LoopbackPreventionSettings = { "EnableLoopbackPrevention", "SourceSchema", "TargetSchema" },
  CharacterSetSettings = { "CharacterReplacements", "CharacterSetSupport" },
  BeforeImageSettings = { "EnableBeforeImage", "FieldName", "ColumnFilter" },
}
-- Defaults of the keys the seeds put where DMS does not read them.
local DEFAULTS = { HistoryTimeslotInMinutes = "5", FullLoadIgnoreConflicts = "true" }

-- Top-level keys that are values, not sections.
local TOP = { FailTaskWhenCleanTaskResourceFailed = true, TTSettings = true, PostProcessingRules = true }

-- Documented choices and ranges.
local ENUMS = {
  ["FullLoadSettings.TargetTablePrepMode"] = { "DO_NOTHING", "DROP_AND_CREATE", "TRUNCATE_BEFORE_LOAD" },
  ["ValidationSettings.ValidationMode"] = { "ROW_LEVEL", "GROUP_LEVEL" },
}
local RANGES = {
  ["FullLoadSettings.MaxFullLoadSubTasks"] = { 1, 49 },
  ["FullLoadSettings.CommitRate"] = { 1, 50000 },
  ["TargetMetadata.InlineLobMaxSize"] = { 0, 102400 },
  ["ValidationSettings.ThreadCount"] = { 1, 200 },
}
local SEVERITIES = { LOGGER_SEVERITY_DEFAULT = true, LOGGER_SEVERITY_DEBUG = true, LOGGER_SEVERITY_DETAILED_DEBUG = true,
                     LOGGER_SEVERITY_ERROR = true, LOGGER_SEVERITY_WARNING = true, LOGGER_SEVERITY_INFO = true }

-- key -> a section documenting it; lowercased key -> its spelling; the
-- keys of each section as a set.
local SECTION_OF, SPELLING, IN = {}, {}, {}
for section, keys in pairs(KEYS) do
  IN[section] = {}
  for _, k in ipairs(keys) do
    SECTION_OF[k] = SECTION_OF[k] or section
    SPELLING[k:lower()] = k
    IN[section][k] = true
  end
end

local function add(out, level, key, fmt, ...)
  out[#out + 1] = { level = level, key = key, text = string.format(fmt, ...) }
end

-- A key of 'section' DMS does not read: misspelt, or in another section.
local function unknown_key(out, section, k)
  local path = section .. "." .. k
  local real = SPELLING[k:lower()]
  if real and IN[section][real] then
    add(out, "warn", path, "%s: DMS reads %s.%s (keys are case-sensitive), so it ignores this one and uses its "
      .. "default%s", path, section, real, DEFAULTS[real] and (" (" .. DEFAULTS[real] .. ")") or "")
  elseif real then
    add(out, "warn", path, "%s: %s is an %s setting; DMS ignores it under %s and uses the %s default%s", path, real,
      SECTION_OF[real], section, SECTION_OF[real], DEFAULTS[real] and (" (" .. DEFAULTS[real] .. ")") or "")
  else
    add(out, "warn", path, "%s: not a DMS task setting pgtide knows; DMS ignores unknown keys", path)
  end
end

--[[
check(doc) -> problems, in document order of sections (sorted) then keys.
'doc' is the decoded settings object.
]]
function M.check(doc)
  local out = {}
  local sections = {}
  for k in pairs(doc) do sections[#sections + 1] = k end
  table.sort(sections)
  for _, section in ipairs(sections) do
    local v = doc[section]
    if KEYS[section] and type(v) == "table" then
      local keys = {}
      for k in pairs(v) do keys[#keys + 1] = k end
      table.sort(keys)
      for _, k in ipairs(keys) do
        local path = section .. "." .. k
        if not IN[section][k] then
          unknown_key(out, section, k)
        elseif ENUMS[path] then
          local ok = false
          for _, e in ipairs(ENUMS[path]) do if v[k] == e then ok = true end end
          if not ok then
            add(out, "error", path, "%s '%s' is not one of %s: DMS rejects the task", path, tostring(v[k]),
              table.concat(ENUMS[path], ", "))
          end
        elseif RANGES[path] then
          local n = tonumber(v[k])
          if not n or n < RANGES[path][1] or n > RANGES[path][2] then
            add(out, "error", path, "%s is %s; DMS accepts %d to %d", path, tostring(v[k]), RANGES[path][1],
              RANGES[path][2])
          end
        end
      end
    elseif not TOP[section] then
      local real = SPELLING[section:lower()] and SECTION_OF[SPELLING[section:lower()]]
      add(out, "warn", section, "%s: not a DMS task settings section pgtide knows%s; DMS ignores it", section,
        real and (" (did you mean a key of " .. real .. "?)") or "")
    end
  end
  for i, c in ipairs(type(doc.Logging) == "table" and doc.Logging.LogComponents or {}) do
    if type(c) == "table" and c.Severity and not SEVERITIES[c.Severity] then
      add(out, "error", "Logging.LogComponents", "Logging.LogComponents[%d].Severity '%s' is not a DMS severity "
        .. "(LOGGER_SEVERITY_DEFAULT, _ERROR, _WARNING, _INFO, _DEBUG, _DETAILED_DEBUG)", i, tostring(c.Severity))
    end
  end
  local tm = type(doc.TargetMetadata) == "table" and doc.TargetMetadata or {}
  if tm.BatchApplyEnabled == true and tm.SupportLobs ~= false and tm.FullLobMode == true then
    add(out, "warn", "TargetMetadata.BatchApplyEnabled", "TargetMetadata.BatchApplyEnabled with FullLobMode: batch "
      .. "apply works only in limited LOB mode, so DMS applies the changes of tables with LOB columns (text, "
      .. "jsonb, bytea, arrays...) one by one (transactional apply); set LimitedSizeLobMode with LobMaxSize to batch "
      .. "them (LOBs above LobMaxSize are then truncated)")
  end
  if (tonumber(tm.LobChunkSize) or 0) > 64 then
    add(out, "warn", "TargetMetadata.LobChunkSize", "TargetMetadata.LobChunkSize %s KB: above 64 KB full LOB mode "
      .. "can make the task fail (DMS recommends 64)", tostring(tm.LobChunkSize))
  end
  return out
end

return M
