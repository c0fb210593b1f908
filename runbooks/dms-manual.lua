--[[
dms-manual: "Postgres Imports - Amazon DMS", the manual AWS DMS procedure,
automated and verified.

The seed (PlanetScale's guide) is a list of console clicks and SQL
snippets.  Each step below does what the user would do by hand, in the
seed's order and words, and checks that it worked.  Where the seed is
weak pgtide does more: the 7 checks DMS would run are made before
anything is created (with the fix for each failure); names are unique
per migration; every wait has a timeout and reports the last status;
CDC lag is read from CloudWatch and proven with a sentinel row; data is
compared row by row; foreign keys are checked for violations before they
are added; cleanup also removes the source's replication slot.

  pgtide run dms-manual -c migration.lua          # rerun the same command to resume
  pgtide run dms-manual -c migration.lua --dry-run

Every ARN created is recorded in the state directory as soon as it
exists, so a rerun resumes and the cleanup step finds everything.
]]
local runbook = require "pgtide.runbook"
local steps = require "pgtide.dms.steps"
local awsx = require "pgtide.dms.awsx"
local naming = require "pgtide.dms.naming"
local infra = require "pgtide.dms.infra"
local endpoints = require "pgtide.dms.endpoints"
local task = require "pgtide.dms.task"
local monitor = require "pgtide.dms.monitor"
local cleanup = require "pgtide.dms.cleanup"
local settings = require "pgtide.dms.settings"
local iam = require "pgtide.dms.iam"
local log = require "log"

local rb = runbook.new {
  name = "dms-manual",
  title = "Postgres Imports - Amazon DMS (the manual procedure, automated)",
  params = steps.params {
    task_settings = { type = "enum", values = { "schema-first", "standard" }, default = "schema-first",
      doc = "the seed's task settings: Option 1 (schema-first, DO_NOTHING) or Option 2 (standard, DROP_AND_CREATE)" },
    task_settings_file = { type = "string", default = "", doc = "your own ReplicationTaskSettings JSON instead" },
    instance_class = { type = "string", default = "dms.t3.medium", doc = "replication instance class" },
    allocated_storage = { type = "integer", default = 50, doc = "replication instance storage (GB)" },
    multi_az = { type = "boolean", default = false, doc = "Multi-AZ (No for cost savings, Yes for production)" },
    publicly_accessible = { type = "boolean", default = true, doc = "replication instance publicly accessible" },
    subnet_ids = { type = "list", default = {}, doc = "subnets for a replication subnet group (2+ AZs); "
      .. "empty: the default VPC" },
    vpc_security_group_ids = { type = "list", default = {}, doc = "security groups of the instance (with "
      .. "subnet_ids and none given, pgtide creates one)" },
    source_security_group_id = { type = "string", default = "", doc = "source database security group to "
      .. "open to the instance on the source port (revoked at cleanup)" },
    source_ssl_mode = { type = "enum", values = { "none", "require", "verify-ca", "verify-full" }, default = "none",
      doc = "SSL mode of the source endpoint" },
    target_ssl_mode = { type = "enum", values = { "require", "verify-ca", "verify-full", "none" }, default = "require",
      doc = "SSL mode of the target endpoint (the seed: require)" },
    slot_plugin = { type = "enum", values = { "test_decoding" }, default = "test_decoding",
      doc = "logical decoding plugin (the seed's pluginName)" },
    after_connect_script = { type = "string", default = "", doc = "target endpoint AfterConnectScript, e.g. "
      .. "SET session_replication_role = replica;" },
    instance_timeout = { type = "integer", default = 1800, doc = "timeout for the instance to become available (s)" },
  },
}

-- Where this runbook keeps its DMS resources.
local function rec(ctx)
  local infra_out = ctx.outputs["dms-infrastructure"] or {}
  local ep = ctx.outputs["endpoints"] or {}
  local t = ctx.outputs["task"] or {}
  return {
    instance_id = infra_out.instance_id, instance_arn = infra_out.instance_arn,
    subnet_group = infra_out.subnet_group, security_group_id = infra_out.security_group_id,
    security_group_created = infra_out.security_group_created, source_rule = infra_out.source_rule,
    source_endpoint_arn = ep.source_endpoint_arn, target_endpoint_arn = ep.target_endpoint_arn,
    task_arn = t.task_arn, slot = t.slot,
  }
end

-- 1
rb:step(steps.preflight { name = "preflight", title = "Prerequisites: source database checks and PlanetScale facts",
                          aws_actions = require("pgtide.dms.permissions").DMS_MANUAL })

-- 2
rb:step(steps.schema { name = "schema", title = "Pre-Migration Schema Setup" })

-- 3
rb:step {
  name = "iam-roles", title = "Set Up AWS DMS: IAM roles dms-vpc-role and dms-cloudwatch-logs-role",
  plan = "looks up the IAM roles DMS needs in every account (dms-vpc-role, dms-cloudwatch-logs-role; the DMS "
    .. "console makes them on first use, the API does not) and creates the missing ones after your "
    .. "confirmation, trusted by dms.amazonaws.com with their AWS managed policies",
  run = function(ctx)
    local missing = iam.missing(iam.lookup(ctx))
    iam.create(ctx, missing)
    if #missing > 0 then
      log.info("the next step retries its first DMS call while IAM propagates the new role(s) (at most %d s)",
        ctx.params.iam_propagation_timeout)
    end
  end,
}

-- 4
rb:step {
  name = "dms-infrastructure", title = "Set Up AWS DMS: Create DMS Replication Instance",
  plan = function(ctx)
    local p = ctx.params
    return string.format("creates (or finds) %sreplication instance pgtide-<migration>-<id> (%s, Multi-AZ %s, "
      .. "publicly accessible %s, engine %s, %d GB) and waits until it is available (at most %d s)",
      (p.subnet_ids and #p.subnet_ids > 0) and "a subnet group, a security group, a " or "a ",
      p.instance_class, tostring(p.multi_az), tostring(p.publicly_accessible),
      p.engine_version ~= "" and p.engine_version or "latest", p.allocated_storage, p.instance_timeout)
  end,
  run = function(ctx)
    local names = naming.for_ctx(ctx)
    local src = require("pgtide.dms.conn").details(ctx, "source")
    infra.ensure(ctx, names, { source_port = src.port })
    log.info("replication instance %s is available (%s, engine %s, public IP %s)", ctx.out.instance_id,
      tostring(ctx.out.instance_class), tostring(ctx.out.engine_version), tostring(ctx.out.public_ip))
  end,
}

-- 5
rb:step {
  name = "endpoints", title = "Create Source Endpoint, Create Target Endpoint, Test Endpoints",
  plan = "creates the source endpoint (postgres, extra connection attributes pluginName=test_decoding; "
    .. "slotName=<per migration>; captureDDLs=false; maxFileSize=32768) and the target endpoint (postgres, "
    .. "SSL mode require); tests both connections from the replication instance and waits for the results",
  run = function(ctx)
    local names = naming.for_ctx(ctx)
    local r = rec(ctx)
    runbook.require(r.instance_arn, "no replication instance recorded: run the dms-infrastructure step first")
    local src_arn = endpoints.ensure(ctx, names, "source", endpoints.source_spec(ctx, names))
    local dst_arn = endpoints.ensure(ctx, names, "target", endpoints.target_spec(ctx, names))
    -- test both (the second even when the first fails, so one run reports both)
    local errs = {}
    for _, x in ipairs({ { "source", src_arn }, { "target", dst_arn } }) do
      local ok, err = pcall(endpoints.test, ctx, r.instance_arn, x[2], x[1])
      if ok then log.info("%s endpoint connection test: successful", x[1])
      else errs[#errs + 1] = require("pgtide.errors").message(err) end
    end
    runbook.require(#errs == 0, "%s", table.concat(errs, "; "))
  end,
}

-- 6
rb:step {
  name = "task", title = "Create Migration Task, Configure Table Mappings, Start Migration Task",
  plan = function(ctx)
    local mt = ctx.params.migration_type
    return "checks the task settings against DMS's documentation; creates the task (" ..
      (mt == "full-load" and "Migrate existing data" or mt == "cdc" and "Replicate data changes only"
        or "Migrate existing data and replicate ongoing changes") .. ") with " ..
      settings.describe(ctx.params.task_settings) .. "; table mappings: " ..
      (ctx.params.table_mappings_file ~= "" and ctx.params.table_mappings_file or
        ("all tables of " .. table.concat(ctx.params.schemas or { "public" }, ", "))) ..
      (mt == "full-load" and "; asks you to confirm the application's writes have stopped; starts the task"
        or mt == "cdc" and "; starts the task at the position of cdc_slot " .. tostring(ctx.params.cdc_slot)
        or "; creates the source's replication slot; starts the task at its position (CdcStartPosition)")
  end,
  run = function(ctx)
    local names = naming.for_ctx(ctx)
    local r = rec(ctx)
    runbook.require(r.source_endpoint_arn and r.target_endpoint_arn, "no endpoints recorded: run the endpoints step first")
    local sc = steps.scope(ctx)
    if ctx.params.task_settings == "standard" and ctx.params.task_settings_file == "" then
      log.warn("task settings: standard (DROP_AND_CREATE): DMS drops and recreates the tables created by the "
        .. "schema step; their secondary indexes, defaults and checks are lost (pre-cutover validation will list them)")
    end
    -- what DMS would reject stops here, before the task exists
    local problems = require("pgtide.dms.task_settings").check(
      settings.decoded(ctx.params.task_settings, ctx.params.task_settings_file))
    for _, pr in ipairs(problems) do
      if pr.level == "error" then runbook.fail("task settings: %s", pr.text) end
      log.warn("task settings: %s", pr.text)
    end
    local arn = task.ensure(ctx, names, {
      source_arn = r.source_endpoint_arn, target_arn = r.target_endpoint_arn, instance_arn = r.instance_arn,
      migration_type = ctx.params.migration_type, mappings = sc.mappings,
      settings = settings.task_settings(ctx.params.task_settings, ctx.params.task_settings_file),
    })
    local slot = task.prepare_slot(ctx, ctx.src, naming.slot(ctx, names), ctx.params.slot_plugin)
    task.start(ctx, arn, { start_position = slot and function() return task.slot_lsn(ctx.src, slot) end or nil })
    -- started: what happens next (the full load, a failure) is the monitor step's
    local t = task.wait_status(ctx, awsx.client(ctx, "dms"), arn, { running = true, failed = true, stopped = true },
      "replication task " .. names.task .. " to start", ctx.params.connection_timeout)
    log.info("replication task %s: %s", names.task, task.status_line(t))
  end,
}

-- 7
rb:step {
  name = "monitor", title = "Monitor Migration Progress",
  plan = function(ctx)
    return string.format("shows full-load progress, per-table statistics, validation state, CDC latency "
      .. "(CloudWatch CDCLatencySource + CDCLatencyTarget), errors and throughput every %s s until the full "
      .. "load is complete and CDC is running (at most %s s); a failed or stopped task is restarted on a rerun",
      tostring(ctx.params.poll_interval), tostring(ctx.params.full_load_timeout))
  end,
  run = function(ctx)
    local r = rec(ctx)
    runbook.require(r.task_arn, "no task recorded: run the task step first")
    if ctx.out.attempted then
      -- a rerun after the task failed: restart it (reload when the load had not finished)
      steps.restart_task(ctx, r.task_arn, { full_load_done = ctx.out.full_load_done, slot = r.slot })
    end
    ctx.out.attempted = true
    ctx:save()
    local snap = monitor.until_loaded(ctx, r.task_arn, { timeout = ctx.params.full_load_timeout,
                                                         instance_id = r.instance_id,
                                                         migration_type = ctx.params.migration_type })
    ctx.out.full_load_done = true
    ctx.out.tables = #snap.tables
    steps.log_lines(monitor.lines(snap))
  end,
}

-- 8
rb:step(steps.verify_data { name = "verify-data", title = "Verify Data Migration", resources = rec })

-- 9
rb:step(steps.sequences { name = "sequences", title = "Post-Migration Sequence Synchronization" })

-- 10
rb:step(steps.constraints { name = "constraints", title = "Apply Remaining Constraints" })

-- 11
rb:step(steps.pre_cutover { name = "pre-cutover", title = "Comprehensive Pre-Cutover Validation",
                            resources = rec })

-- 12
rb:step(steps.cutover { name = "cutover", title = "Perform Cutover", resources = rec })

-- 13
rb:step {
  name = "cleanup", title = "Cleanup", destructive = true,
  plan = "deletes the DMS task, endpoints, replication instance, subnet group and any security group "
    .. "(rule) pgtide created; drops the replication slot and awsdms_* artifacts on the source, the awsdms_* "
    .. "control tables on the target and pgtide's sentinel table; then lists what remains through the API",
  run = function(ctx)
    local r = rec(ctx)
    cleanup.aws(ctx, r)
    local names = naming.for_ctx(ctx)
    steps.database_cleanup(ctx, { slots = { r.slot or names.slot } })
  end,
  verify = function(ctx)
    local left = cleanup.remaining(ctx, rec(ctx))
    runbook.require(#left == 0, "still present after cleanup: %s", table.concat(left, "; "))
    log.info("cleanup verified: no DMS resource of this migration remains")
  end,
}

return rb
