--[[
aurora-cfn: "Migrate from Aurora using Amazon DMS with CloudFormation",
automated: a CloudFormation stack creates the DMS infrastructure, a Step
Functions workflow tests the connections, runs the premigration
assessment, starts the task and watches the full load, and SNS tells you
how it went.  pgtide drives all of it and then does what the workflow
does not: sequences, deferred constraints, validation, a cutover that
proves CDC has caught up, and a cleanup that really removes everything.

What differs from PlanetScale's published template and workflow
(planetscale-dms-facts.md section 2): pgtide's template
(runbooks/templates/aurora-dms.yaml) derives every name from the stack
name (two stacks never collide), bounds every polling loop, uses
TargetTablePrepMode DO_NOTHING as the docs say, and needs no Lambda;
template=planetscale template_file=aurora-to-ps-dms.yaml deploys
PlanetScale's own template instead.

  pgtide run aurora-cfn -c migration.lua      # rerun the same command to resume
]]
local runbook = require "pgtide.runbook"
local steps = require "pgtide.dms.steps"
local awsx = require "pgtide.dms.awsx"
local conn = require "pgtide.dms.conn"
local naming = require "pgtide.dms.naming"
local infra = require "pgtide.dms.infra"
local task = require "pgtide.dms.task"
local monitor = require "pgtide.dms.monitor"
local stack = require "pgtide.dms.stack"
local cleanup = require "pgtide.dms.cleanup"
local dms_iam = require "pgtide.dms.iam"
local json = require "json"
local log = require "log"

local rb = runbook.new {
  name = "aurora-cfn",
  title = "Migrate from Aurora using Amazon DMS with CloudFormation (Step Functions, SNS)",
  params = steps.params {
    template = { type = "enum", values = { "pgtide", "planetscale" }, default = "pgtide",
      doc = "pgtide's template, or PlanetScale's aurora-to-ps-dms.yaml (give it with template_file)" },
    template_file = { type = "string", default = "", doc = "template file to deploy instead of pgtide's" },
    dms_roles = { type = "enum", values = { "pgtide", "stack" }, default = "pgtide", doc = "who creates missing "
      .. "DMS IAM roles: pgtide (then waits until DMS can use them) or the stack (CreateDMSRoles=true, the guide's "
      .. "way; the stack may fail while IAM propagates, and the rerun then lets pgtide create them)" },
    template_bucket = { type = "string", default = "", doc = "S3 bucket for templates over 51,200 bytes "
      .. "(default: one pgtide creates and removes)" },
    stack_name = { type = "string", default = "", doc = "stack name (default: derived from the migration name)" },
    vpc_id = { type = "string", default = "", doc = "VPC of the replication instance (default: the default VPC)" },
    subnet_ids = { type = "list", default = {}, doc = "2+ subnets in different AZs (default: the VPC's subnets)" },
    instance_class = { type = "string", default = "dms.c6i.xlarge", doc = "DMS Instance Class" },
    allocated_storage = { type = "integer", default = 500, doc = "replication instance storage (GB)" },
    notification_email = { type = "string", default = "", doc = "Notification Email (SNS subscription)" },
    migration_bucket_name = { type = "string", default = "", doc = "Migration Bucket Name (default: derived "
      .. "from the stack name; required by PlanetScale's template)" },
    source_ssl_mode = { type = "enum", values = { "require", "none", "verify-ca", "verify-full" },
      default = "require", doc = "SSL mode of the source endpoint" },
    source_security_group_id = { type = "string", default = "", doc = "the source's security group: the "
      .. "workflow may add a rule for DMS to it; cleanup revokes it" },
    dms_source_host = { type = "string", default = "", doc = "source host as DMS reaches it (the Aurora writer endpoint)" },
    slot_plugin = { type = "enum", values = { "test_decoding" }, default = "test_decoding",
      doc = "logical decoding plugin of the source endpoint" },
    stack_timeout = { type = "integer", default = 3600, doc = "timeout for stack creation and deletion (s)" },
    sns_confirm_timeout = { type = "integer", default = 600, doc = "how long to wait for the email "
      .. "subscription to be confirmed before going on without it (s)" },
    require_email_confirmation = { type = "boolean", default = false, doc = "fail instead of going on when "
      .. "the subscription is not confirmed in time" },
    connection_poll_seconds = { type = "integer", default = 15, doc = "workflow: seconds between connection checks" },
    max_connection_checks = { type = "integer", default = 40, doc = "workflow: connection checks before giving up" },
    assessment_poll_seconds = { type = "integer", default = 60, doc = "workflow: seconds between assessment checks" },
    max_assessment_checks = { type = "integer", default = 120, doc = "workflow: assessment checks before giving up" },
    monitor_poll_seconds = { type = "integer", default = 300, doc = "workflow: seconds between task checks" },
    max_monitor_checks = { type = "integer", default = 288, doc = "workflow: task checks before giving up" },
  },
}


local function stack_name(ctx)
  if ctx.params.stack_name ~= "" then return ctx.params.stack_name end
  return naming.for_ctx(ctx).stack
end

-- What the outputs step recorded (the stack's DMS resources).
local function rec(ctx)
  local d = ctx.outputs["deploy"] or {}
  local o = ctx.outputs["outputs"] or {}
  local s = ctx.outputs["start"] or {}
  return {
    stack_id = d.stack_id, stack_name = d.stack_name, template_bucket = d.template_bucket,
    template_bucket_created = d.template_bucket_created,
    task_arn = o.task_arn, instance_arn = o.instance_arn, instance_id = o.instance_id,
    source_endpoint_arn = o.source_endpoint_arn, target_endpoint_arn = o.target_endpoint_arn,
    bucket = o.bucket, topic_arn = o.topic_arn, state_machine_arn = o.state_machine_arn,
    dms_security_group_id = o.dms_security_group_id, dms_security_group_ids = o.dms_security_group_ids,
    payload = o.payload,
    slot = s.slot, slots_before = s.slots_before, execution_arn = s.execution_arn,
  }
end

-- 1
-- The names the template derives from the stack name, checked before deploying.
local function name_checks(ctx)
  local sts = awsx.client(ctx, "sts")
  local account = awsx.unwrap(sts:GetCallerIdentity {}, "GetCallerIdentity").Account
  local region = awsx.options(ctx).region or ""
  local res = { id = "stack_names", title = "Names derived from the stack name" }
  if ctx.params.template == "planetscale" then
    res.status, res.message = "pass", "PlanetScale's template uses fixed names"
    return { res }
  end
  local problems = require("pgtide.dms.permissions").stack_names(stack_name(ctx), tostring(account), region,
    ctx.params.migration_bucket_name)
  if #problems == 0 then
    res.status, res.message = "pass", string.format("the names derived from stack %s are valid for S3, IAM and DMS",
      stack_name(ctx))
  else
    res.status, res.message = "fail", table.concat(problems, "; ")
    res.fix = "choose a shorter stack_name (at most 38 characters keeps every derived name valid), lowercase for S3, "
      .. "or set migration_bucket_name"
  end
  return { res }
end

rb:step(steps.preflight { name = "preflight", title = "Source database prerequisites",
                          aws_actions = require("pgtide.dms.permissions").AURORA_CFN, extra_checks = name_checks })

-- 2
rb:step(steps.schema { name = "schema", title = "Pre-Migration Schema Setup" })

-- The VPC and the subnets (one per availability zone) of the replication
-- instance: the parameters, else the default VPC's.
local function network(ctx)
  local p = ctx.params
  local ec2 = awsx.client(ctx, "ec2")
  local vpc = p.vpc_id
  if vpc == "" then
    local r = awsx.unwrap(ec2:DescribeVpcs { Filters = { { Name = "is-default", Values = { "true" } } } }, "DescribeVpcs")
    vpc = r.Vpcs and r.Vpcs[1] and r.Vpcs[1].VpcId
    runbook.require(vpc, "no default VPC in this region: give vpc_id and subnet_ids")
  end
  local subnets = p.subnet_ids
  if #subnets == 0 then
    local r = awsx.unwrap(ec2:DescribeSubnets { Filters = { { Name = "vpc-id", Values = { vpc } } } }, "DescribeSubnets")
    local azs, seen = {}, {}
    for _, s in ipairs(r.Subnets or {}) do
      if not seen[s.AvailabilityZone] then seen[s.AvailabilityZone] = true; azs[#azs + 1] = s.SubnetId end
    end
    subnets = azs
  end
  runbook.require(#subnets >= 2, "the replication subnet group needs subnets in at least 2 availability zones "
    .. "(found %d in %s): give subnet_ids", #subnets, vpc)
  return vpc, subnets
end

--[[
The IAM decision (the seed's "Check DMS IAM Roles"), into 'out' (the
iam-roles step's outputs): CreateDMSRoles for the stack.  With
dms_roles=pgtide (the default) pgtide creates any missing role itself,
after confirmation, and makes the first DMS call that needs dms-vpc-role
(a probe subnet group) until it succeeds: a stack that creates the roles
races IAM propagation and fails with AccessDeniedFault on its subnet
group.  With dms_roles=stack it follows the seed: neither role ->
CreateDMSRoles=true; one -> create the other.  'after_failure': the
previous stack failed; whatever dms_roles says, missing roles are then
created by pgtide (the failed stack's rollback deleted its own).
]]
local function decide_roles(ctx, out, after_failure)
  local exists = dms_iam.lookup(ctx)
  local missing = dms_iam.missing(exists)
  local saved = ctx.out
  ctx.out = out
  local ok, err = pcall(function()
    if #missing == #dms_iam.ROLES and ctx.params.dms_roles == "stack" and not after_failure then
      out.create_dms_roles = "true"
      log.info("neither DMS role exists: the stack creates them (dms_roles=stack, as the guide does; a stack that "
        .. "fails with AccessDeniedFault on its subnet group is redeployed by the rerun with the roles made first)")
      return
    end
    if #missing > 0 then
      if after_failure then
        log.warn("the previous stack failed and the DMS role(s) %s are missing: pgtide creates them and waits until "
          .. "DMS can use them before deploying again", table.concat(missing, ", "))
      end
      dms_iam.create(ctx, missing)
      local _, subnets = network(ctx)
      dms_iam.probe(ctx, naming.for_ctx(ctx), subnets)
    end
    out.create_dms_roles = "false"
  end)
  ctx.out = saved
  if not ok then error(err, 0) end
  ctx:save()
  log.info("CreateDMSRoles = %s", out.create_dms_roles)
end

-- 3
rb:step {
  name = "iam-roles", title = "Check DMS IAM Roles",
  plan = function(ctx)
    if ctx.params.dms_roles == "stack" then
      return "looks up dms-vpc-role and dms-cloudwatch-logs-role: neither exists -> CreateDMSRoles=true; both "
        .. "exist -> false; only one -> pgtide creates the other (trusted by dms.amazonaws.com, with its AWS "
        .. "managed policy), waits until DMS can use it, and sets false"
    end
    return "looks up dms-vpc-role and dms-cloudwatch-logs-role; creates the missing ones after your confirmation "
      .. "(trusted by dms.amazonaws.com, with their AWS managed policies), waits until DMS can use dms-vpc-role "
      .. "(a probe subnet group, created and deleted), and sets CreateDMSRoles=false (dms_roles=stack: the guide's "
      .. "CreateDMSRoles=true when neither exists)"
  end,
  run = function(ctx) decide_roles(ctx, ctx.out, false) end,
}

-- The stack parameters, for pgtide's template or PlanetScale's.
local function stack_params(ctx, name)
  local p = ctx.params
  local src = conn.details(ctx, "source")
  local dst = conn.details(ctx, "target")
  local sc = steps.scope(ctx)
  local names = naming.for_ctx(ctx)
  local vpc, subnets = network(ctx)
  local create_roles = (ctx.outputs["iam-roles"] or {}).create_dms_roles or "true"
  local bucket = p.migration_bucket_name
  local params = {
    VpcId = vpc, SubnetIds = table.concat(subnets, ","),
    SourceEndpointHost = src.host, SourceEndpointPort = tostring(src.port), SourceDatabaseName = src.dbname,
    SourceUsername = src.user, SourcePassword = src.password,
    TargetEndpointHost = dst.host, TargetEndpointPort = tostring(dst.port), TargetDatabaseName = dst.dbname,
    TargetUsername = dst.user, TargetPassword = dst.password,
    DMSInstanceClass = p.instance_class, MigrationType = p.migration_type,
    EnableAutomation = "true", CreateDMSRoles = create_roles, NotificationEmail = p.notification_email,
  }
  if p.template == "planetscale" and p.template_file ~= "" then
    runbook.require(bucket ~= "", "PlanetScale's template needs migration_bucket_name (3-35 characters)")
    runbook.require(p.notification_email ~= "", "PlanetScale's template needs notification_email")
    params.MigrationBucketName = bucket
    log.warn("PlanetScale's template uses fixed resource names (aurora-to-planetscale-postgres, "
      .. "dms-subnet-group, ...): a second stack in this account and region will collide")
  else
    params.MigrationBucketName = bucket
    params.SourceSslMode = p.source_ssl_mode
    params.SourceSecurityGroupId = p.source_security_group_id
    params.ReplicationSlotName = naming.slot(ctx, names) or ""
    params.HeartbeatFrequency = tostring((p.heartbeat and p.migration_type ~= "full-load") and p.heartbeat_frequency
      or 0)
    params.HeartbeatSchema = p.heartbeat_schema
    params.TableMappings = sc.mappings
    params.DMSEngineVersion = p.engine_version
    params.DMSAllocatedStorage = tostring(p.allocated_storage)
    params.ConnectionPollSeconds = tostring(p.connection_poll_seconds)
    params.MaxConnectionChecks = tostring(p.max_connection_checks)
    params.AssessmentPollSeconds = tostring(p.assessment_poll_seconds)
    params.MaxAssessmentChecks = tostring(p.max_assessment_checks)
    params.MonitorPollSeconds = tostring(p.monitor_poll_seconds)
    params.MaxMonitorChecks = tostring(p.max_monitor_checks)
  end
  return params
end

--[[
Create the stack (or find it).  A stack left in ROLLBACK_COMPLETE,
CREATE_FAILED or DELETE_FAILED by an earlier attempt is deleted first,
after explaining what failed.  'out' is the deploy step's outputs (the
wait-stack step redeploys through it on a rerun).
]]
local function deploy(ctx, out)
  local name = stack_name(ctx)
  out.stack_name = name
  local existing = stack.describe(ctx, out.stack_id or name)
  if existing and (existing.StackStatus == "ROLLBACK_COMPLETE" or existing.StackStatus == "CREATE_FAILED"
                   or existing.StackStatus == "ROLLBACK_FAILED" or existing.StackStatus == "DELETE_FAILED") then
    log.warn("stack %s is %s from an earlier attempt (%s); deleting it before creating it again", name,
      existing.StackStatus, stack.explain(stack.events(ctx, existing.StackId)))
    stack.delete(ctx, existing.StackId, { timeout = ctx.params.stack_timeout, name = name })
    existing = nil
    -- the IAM check again: the failed stack's rollback deleted the roles it made
    ctx.outputs["iam-roles"] = ctx.outputs["iam-roles"] or {}
    decide_roles(ctx, ctx.outputs["iam-roles"], true)
  end
  if existing and existing.StackStatus ~= "DELETE_COMPLETE" then
    out.stack_id = existing.StackId
    log.info("stack %s exists (%s)", name, existing.StackStatus)
    return
  end
  local body, origin = stack.template(ctx)
  local params = stack_params(ctx, name)
  out.template = origin
  -- S3 uploads (large templates) record their bucket in the deploy step's outputs
  local saved = ctx.out
  ctx.out = out
  local ok, id = pcall(stack.create, ctx, name, body, params, naming.tags(naming.for_ctx(ctx)))
  ctx.out = saved
  if not ok then error(id, 0) end
  out.stack_id = id
  out.created_at = os.time()
  ctx:save()
end

-- 4
rb:step {
  name = "deploy", title = "Deploy CloudFormation Stack",
  plan = function(ctx)
    return string.format("creates stack %s from %s (TemplateBody, or uploaded to S3 and passed as TemplateURL "
      .. "above 51,200 bytes) with CAPABILITY_NAMED_IAM and the parameters: VPC and subnets, source and target "
      .. "endpoints (passwords as NoEcho parameters), instance class %s, migration type %s, CreateDMSRoles from "
      .. "the IAM check, notification email, assessment bucket; a stack that failed before is deleted first",
      ctx.params.stack_name ~= "" and ctx.params.stack_name or "pgt-<migration>-<id>",
      ctx.params.template_file ~= "" and ctx.params.template_file or "runbooks/templates/aurora-dms.yaml",
      ctx.params.instance_class, ctx.params.migration_type)
  end,
  run = function(ctx) deploy(ctx, ctx.out) end,
}

-- 5
rb:step {
  name = "wait-stack", title = "Wait for Stack Completion",
  plan = function(ctx)
    return string.format("waits (at most %d s) for CREATE_COMPLETE, showing the stack events as they "
      .. "come; a failure is explained from the events (which resource, why)", ctx.params.stack_timeout)
  end,
  run = function(ctx)
    local d = ctx.outputs["deploy"]
    runbook.require(d and d.stack_id, "no stack recorded: run the deploy step first")
    if ctx.out.attempted then
      -- a rerun after the stack failed: deploy again (deletes the failed stack first)
      local s = stack.describe(ctx, d.stack_id)
      if not s or s.StackStatus ~= "CREATE_COMPLETE" and s.StackStatus ~= "CREATE_IN_PROGRESS" then deploy(ctx, d) end
    end
    ctx.out.attempted = true
    ctx:save()
    local s = stack.wait(ctx, d.stack_id, "CREATE_COMPLETE", { timeout = ctx.params.stack_timeout, name = d.stack_name,
                                                               created = d.created_at })
    ctx.out.status = s.StackStatus
  end,
}

-- 6
rb:step {
  name = "sns", title = "Confirm your email notification subscription",
  plan = function(ctx)
    return string.format("shows whether the email subscription is pending confirmation (an email from "
      .. "no-reply@sns.amazonaws.com, \"DMS Migration Workflow Notifications\"), then waits at most %d s for "
      .. "it to be confirmed; after that it goes on without notifications%s", ctx.params.sns_confirm_timeout,
      ctx.params.require_email_confirmation and " (or fails: require_email_confirmation)" or "")
  end,
  run = function(ctx)
    if ctx.params.notification_email == "" then
      log.info("no notification_email: the workflow sends no email")
      ctx.out.state = "none"
      return
    end
    local d = ctx.outputs["deploy"] or {}
    local outs = stack.outputs(stack.describe(ctx, d.stack_id))
    local topic = outs.NotificationTopicArn
    runbook.require(topic, "the stack has no NotificationTopicArn output")
    local sns = awsx.client(ctx, "sns")
    local pending_logged = false
    local ok, err = pcall(awsx.wait, {
      what = "email subscription of " .. ctx.params.notification_email,
      timeout = ctx.params.sns_confirm_timeout, interval = math.min(ctx.params.poll_interval, 5),
      poll = function()
        local subs = awsx.all(sns, "ListSubscriptionsByTopic", { TopicArn = topic }, "Subscriptions")
        local mine
        for _, s in ipairs(subs) do
          if s.Endpoint == ctx.params.notification_email then mine = s end
        end
        if not mine then return false, "not subscribed yet" end
        if mine.SubscriptionArn == "PendingConfirmation" then
          if not pending_logged then
            log.warn("the subscription of %s is pending confirmation: open the email from no-reply@sns.amazonaws.com "
              .. "(\"DMS Migration Workflow Notifications\") and click Confirm subscription", ctx.params.notification_email)
            pending_logged = true
          end
          return false, "PendingConfirmation"
        end
        return true, "confirmed"
      end,
    })
    if ok then
      ctx.out.state = "confirmed"
      return
    end
    if require("pgtide.errors").is_interrupt(err) or ctx.params.require_email_confirmation then error(err, 0) end
    log.warn("%s; going on without email notifications (confirm later to receive them)",
      require("pgtide.errors").message(err))
    ctx.out.state = "skipped"
  end,
}

-- 7
rb:step {
  name = "outputs", title = "Get Workflow Input Configuration",
  plan = "reads the stack outputs: StepFunctionsPayloadTemplate (the workflow input), StepFunctionsConsoleURL, "
    .. "and the ARNs of the DMS instance, endpoints and task",
  run = function(ctx)
    local d = ctx.outputs["deploy"] or {}
    local s = stack.describe(ctx, d.stack_id)
    runbook.require(s and s.StackStatus == "CREATE_COMPLETE", "the stack is %s, not CREATE_COMPLETE",
      s and s.StackStatus or "missing")
    local o = stack.outputs(s)
    runbook.require(o.StepFunctionsPayloadTemplate, "the stack has no StepFunctionsPayloadTemplate output "
      .. "(EnableAutomation must be true)")
    local payload = json.decode(o.StepFunctionsPayloadTemplate)
    ctx.out.payload = o.StepFunctionsPayloadTemplate
    ctx.out.task_arn = payload.replicationTaskArn or o.ReplicationTaskArn
    ctx.out.instance_arn = payload.replicationInstanceArn or o.ReplicationInstanceArn
    ctx.out.source_endpoint_arn = payload.sourceEndpointArn or o.SourceEndpointArn
    ctx.out.target_endpoint_arn = payload.targetEndpointArn or o.TargetEndpointArn
    ctx.out.bucket = o.PreMigrationAssessmentBucket
    ctx.out.topic_arn = o.NotificationTopicArn
    ctx.out.state_machine_arn = o.MigrationStateMachineArn
    ctx.out.dms_security_group_id = payload.dmsSecurityGroupId or o.DMSSecurityGroupId
    local inst = infra.describe_one(awsx.client(ctx, "dms"), "DescribeReplicationInstances",
      "replication-instance-arn", ctx.out.instance_arn, "ReplicationInstances")
    ctx.out.instance_id = inst and inst.ReplicationInstanceIdentifier or o.ReplicationInstanceIdentifier
    -- the instance's security groups: the workflow's fix admits them
    -- (PlanetScale's template does not output its DMS security group)
    ctx.out.dms_security_group_ids = {}
    for _, g in ipairs(inst and inst.VpcSecurityGroups or {}) do
      table.insert(ctx.out.dms_security_group_ids, g.VpcSecurityGroupId)
    end
    runbook.require(ctx.out.state_machine_arn and ctx.out.task_arn, "the stack outputs lack the state machine "
      .. "or the replication task")
    log.info("StepFunctionsConsoleURL: %s", tostring(o.StepFunctionsConsoleURL))
    log.info("workflow input (StepFunctionsPayloadTemplate): %s", o.StepFunctionsPayloadTemplate)
  end,
}


--[[
Start the workflow (the start step's outputs are 'out'): the slot first,
then StartExecution with the payload plus cdcStartPosition, the slot's
position (a task whose endpoint names a slot must start at a valid
CdcStartPosition; the workflow passes it to StartReplicationTask).  When
an execution was started before and ended badly, a failed or stopped
task is restarted before the new execution (reloaded, after emptying the
target tables, when its full load had not finished), since the workflow
only ever asks for start-replication.
]]
local function start_workflow(ctx, out, full_load_done)
  local r = rec(ctx)
  runbook.require(r.state_machine_arn, "no state machine recorded: run the outputs step first")
  local names = naming.for_ctx(ctx)
  if not out.slots_before then
    local before = {}
    for _, s in ipairs(ctx.src:query("select slot_name from pg_replication_slots")) do before[#before + 1] = s.slot_name end
    out.slots_before = before
  end
  if ctx.params.template ~= "planetscale" then
    out.slot = task.prepare_slot(ctx, ctx.src, naming.slot(ctx, names), ctx.params.slot_plugin)
  end
  local sfn = awsx.client(ctx, "stepfunctions")
  if out.execution_arn then
    local ex = sfn:DescribeExecution { executionArn = out.execution_arn }
    if ex.status == "RUNNING" or ex.status == "SUCCEEDED" then
      log.info("workflow execution %s is %s", out.execution_arn, ex.status)
      return
    end
    log.info("the previous workflow execution ended %s (%s: %s); starting a new one", ex.status,
      tostring(ex.error), tostring(ex.cause))
    local t = task.get(awsx.client(ctx, "dms"), r.task_arn)
    if t and (t.Status == "failed" or t.Status == "stopped") then
      steps.restart_task(ctx, r.task_arn, { full_load_done = full_load_done, slot = out.slot })
      -- the new execution finds it running and goes straight to monitoring
      task.wait_status(ctx, awsx.client(ctx, "dms"), r.task_arn, { running = true }, "replication task to run again",
        ctx.params.connection_timeout, { failed = true, stopped = true })
    end
  end
  out.attempt = (out.attempt or 0) + 1
  local exname = string.format("pgtide-%s-%d-%d", names.suffix, out.attempt, os.time())
  local input = json.decode(r.payload)
  if out.slot then input.cdcStartPosition = task.slot_lsn(ctx.src, out.slot) end
  local res = sfn:StartExecution { stateMachineArn = r.state_machine_arn, name = exname, input = json.encode(input) }
  out.execution_arn = res.executionArn
  out.execution_started = os.time()
  ctx:save()
  log.info("started workflow execution %s", exname)
end

-- 8
rb:step {
  name = "start", title = "Start Migration Workflow",
  plan = "creates the source's replication slot (the slotName the endpoint names), then starts the Step "
    .. "Functions execution with the StepFunctionsPayloadTemplate as input; on a rerun after a failed execution, "
    .. "a failed task is restarted first (reloaded when its full load had not finished)",
  run = function(ctx) start_workflow(ctx, ctx.out) end,
}

-- 9
rb:step {
  name = "monitor", title = "Monitor Migration Progress",
  plan = function(ctx)
    return string.format("follows the workflow execution (each state it enters) together with the DMS task: "
      .. "full-load percent, per-table statistics, validation, CDC latency, errors, throughput; until the "
      .. "workflow reports the full load complete with CDC running (at most %d s)", ctx.params.full_load_timeout)
  end,
  run = function(ctx)
    if ctx.out.attempted then
      -- a rerun after the workflow failed: restart it (and the task)
      start_workflow(ctx, ctx.outputs["start"], ctx.out.full_load_done)
    end
    ctx.out.attempted = true
    ctx:save()
    local r = rec(ctx)
    runbook.require(r.execution_arn, "no workflow execution recorded: run the start step first")
    local sfn = awsx.client(ctx, "stepfunctions")
    local seen, prev, snap, last_text = {}, nil, nil, nil
    local ex
    awsx.wait {
      what = "migration workflow", timeout = ctx.params.full_load_timeout, interval = ctx.params.poll_interval,
      poll = function()
        local ok, res = pcall(sfn.DescribeExecution, sfn, { executionArn = r.execution_arn })
        if not ok and awsx.not_found(res) and awsx.young(ctx, ctx.outputs["start"].execution_started) then
          return false, "workflow execution not visible yet"
        end
        if not ok then error(res, 0) end
        ex = res
        local ok, hist = pcall(awsx.all, sfn, "GetExecutionHistory", { executionArn = r.execution_arn }, "events")
        local why
        for _, e in ipairs(ok and hist or {}) do
          local d = e.stateEnteredEventDetails
          if d and not seen[e.id] then
            seen[e.id] = true
            log.info("workflow: %s", d.name)
          end
          -- what sent the workflow to MigrationFailed ($.error: Error, Cause)
          if d and d.name == "MigrationFailed" then
            local dok, input = pcall(json.decode, d.input or "")
            local err = dok and type(input) == "table" and input.error
            if type(err) == "table" then why = string.format("%s: %s", tostring(err.Error), tostring(err.Cause)) end
          end
        end
        snap = monitor.snapshot(ctx, r.task_arn, prev, r.instance_id)
        prev = snap
        local text = table.concat(monitor.lines(snap), "\n")
        if text:gsub("throughput: [^;]*", "") ~= (last_text or ""):gsub("throughput: [^;]*", "") then
          steps.log_lines(monitor.lines(snap))
          last_text = text
        end
        if ex.status == "SUCCEEDED" then
          return true, "workflow succeeded: " .. task.status_line(snap.task)
        end
        if ex.status ~= "RUNNING" and ex.status ~= "PENDING_REDRIVE" then
          local cause = tostring(ex.cause or "")
          return false, ex.status, string.format("the workflow %s: %s: %s%s%s", ex.status:lower(),
            tostring(ex.error), cause, why and ("; it failed on " .. why) or "",
            snap.task.Status == "failed" and ("; the task failed: " .. task.failure_text(snap.task)) or "")
        end
        return false, "workflow running; task " .. task.status_line(snap.task)
      end,
    }
    if ctx.params.migration_type == "full-load-and-cdc" then
      runbook.require(monitor.loaded(snap), "the workflow succeeded but the task is %s", task.status_line(snap.task))
    elseif ctx.params.migration_type == "full-load" then
      -- the workflow may see the last moment of the load (running, 100%):
      -- a full-load task is finished once it stopped FULL_LOAD_ONLY_FINISHED
      snap = monitor.until_loaded(ctx, r.task_arn, { timeout = ctx.params.full_load_timeout,
                                                     instance_id = r.instance_id, migration_type = "full-load" })
    elseif ctx.params.migration_type == "cdc" then
      runbook.require(snap.task.Status == "running", "the workflow succeeded but the task is %s",
        task.status_line(snap.task))
    end
    ctx.out.full_load_done = true
    ctx.out.output = ex.output
  end,
}

-- 10
rb:step(steps.sequences { name = "sequences", title = "Post-Migration Sequence Synchronization" })

-- 11
rb:step(steps.constraints { name = "constraints", title = "Apply Remaining Constraints" })

-- 12
rb:step(steps.pre_cutover { name = "pre-cutover", title = "Comprehensive Pre-Cutover Validation",
                            resources = rec })

-- 13
rb:step(steps.cutover { name = "cutover", title = "Application Cutover", resources = rec })

-- 14
rb:step {
  name = "cleanup", title = "Automated Cleanup", destructive = true,
  plan = "empties the versioned assessment bucket (every version and delete marker), revokes any "
    .. "security-group rule admitting the DMS security group (the workflow's fix), deletes the stack and waits "
    .. "for DELETE_COMPLETE, removes pgtide's template bucket, drops the source's replication slot and DMS "
    .. "artifacts and the target's awsdms_* tables, then checks through the API that nothing is left",
  run = function(ctx)
    local r = rec(ctx)
    ctx.out.removed = ctx.out.removed or {}
    local s3 = awsx.client(ctx, "s3")
    local aws = require "aws"
    if r.stack_id and not ctx.out.removed.stack then
      local s = stack.describe(ctx, r.stack_id)
      if s and s.StackStatus ~= "DELETE_COMPLETE" then
        if r.task_arn then task.stop(ctx, r.task_arn) end
        if r.bucket then
          local ok, n = pcall(aws.s3_empty_bucket, s3, r.bucket)
          if ok then log.info("emptied bucket %s (%d object versions and delete markers)", r.bucket, n)
          elseif not awsx.not_found(n) then error(n, 0) end
        end
        -- the workflow's security-group fix: pgtide's template adds a rule
        -- admitting the DMS security group, PlanetScale's Lambda one
        -- described "DMS access for migration - Auto-added by <function>"
        local from = {}
        for _, g in ipairs(r.dms_security_group_ids or {}) do from[#from + 1] = g end
        if r.dms_security_group_id then from[#from + 1] = r.dms_security_group_id end
        cleanup.revoke_workflow_rules(ctx, { from_groups = from, descriptions = {
          "DMS access for " .. tostring(r.stack_name) .. " ",
          "DMS access for migration - Auto-added by " .. tostring(r.stack_name) .. "-" } })
        stack.delete(ctx, r.stack_id, { timeout = ctx.params.stack_timeout, name = r.stack_name })
        log.info("stack %s deleted", tostring(r.stack_name))
      end
      ctx.out.removed.stack = true
      ctx:save()
    end
    if r.template_bucket and r.template_bucket_created and not ctx.out.removed.template_bucket then
      local ok, err = pcall(aws.s3_empty_bucket, s3, r.template_bucket)
      if ok then
        ok, err = pcall(s3.DeleteBucket, s3, { Bucket = r.template_bucket })
      end
      if not ok and not awsx.not_found(err) then error(err, 0) end
      log.info("deleted template bucket %s", r.template_bucket)
      ctx.out.removed.template_bucket = true
      ctx:save()
    end
    local slots = { r.slot or naming.for_ctx(ctx).slot }
    if ctx.params.template == "planetscale" then
      -- PlanetScale's template names no slot: DMS created one; drop the
      -- DMS-looking slots that were not there before the workflow ran
      local before = {}
      for _, n in ipairs(r.slots_before or {}) do before[n] = true end
      for _, s in ipairs(ctx.src:query("select slot_name from pg_replication_slots where not active")) do
        if not before[s.slot_name] and s.slot_name:lower():find("dms") then slots[#slots + 1] = s.slot_name end
      end
    end
    steps.database_cleanup(ctx, { slots = slots })
  end,
  verify = function(ctx)
    local r = rec(ctx)
    local left = {}
    local s = r.stack_id and stack.describe(ctx, r.stack_id)
    if s and s.StackStatus ~= "DELETE_COMPLETE" then left[#left + 1] = "stack " .. r.stack_id .. " (" .. s.StackStatus .. ")" end
    for _, x in ipairs(cleanup.remaining(ctx, { task_arn = r.task_arn, instance_id = r.instance_id,
                                                source_endpoint_arn = r.source_endpoint_arn,
                                                target_endpoint_arn = r.target_endpoint_arn })) do
      left[#left + 1] = x
    end
    local s3 = awsx.client(ctx, "s3")
    for _, b in ipairs({ r.bucket, r.template_bucket_created and r.template_bucket or nil }) do
      if b and awsx.try(s3.HeadBucket, s3, { Bucket = b }) ~= nil then left[#left + 1] = "bucket " .. b end
    end
    if r.topic_arn then
      local sns = awsx.client(ctx, "sns")
      local ok = pcall(sns.GetTopicAttributes, sns, { TopicArn = r.topic_arn })
      if ok then left[#left + 1] = "topic " .. r.topic_arn end
    end
    if r.state_machine_arn then
      local sfn = awsx.client(ctx, "stepfunctions")
      if awsx.try(sfn.DescribeStateMachine, sfn, { stateMachineArn = r.state_machine_arn }) ~= nil then
        left[#left + 1] = "state machine " .. r.state_machine_arn
      end
    end
    runbook.require(#left == 0, "still present after cleanup: %s", table.concat(left, "; "))
    log.info("cleanup verified: the stack and every resource it created are gone")
  end,
}

return rb
